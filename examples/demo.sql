-- The quickstart's demo database: obviously fake people and orders.
CREATE TABLE customers (
  id integer PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  ssn text NOT NULL,          -- fake US SSNs (the 900 range is never issued)
  card_number text NOT NULL   -- well-known test card numbers
);
INSERT INTO customers VALUES
  (1, 'Ada Example',     'ada@example.com',     '900-12-3456', '4111111111111111'),
  (2, 'Brook Sample',    'brook@example.org',   '900-23-4567', '5555555555554444'),
  (3, 'Casey Placeholder','casey@example.net',  '900-34-5678', '378282246310005'),
  (4, 'Drew Testcase',   'drew@example.com',    '900-45-6789', '6011111111111117');
CREATE TABLE orders (
  id serial PRIMARY KEY,
  customer_id integer REFERENCES customers(id),
  amount numeric(10,2) NOT NULL,
  placed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO orders (customer_id, amount)
  SELECT 1 + (g % 4), round((random() * 200)::numeric, 2) FROM generate_series(1, 40) g;

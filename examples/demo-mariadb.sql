-- The quickstart's demo database for MariaDB (and MySQL 8): the same obviously fake people and
-- orders as examples/demo.sql, with the same table and column names, so that masking rules by
-- table.column apply to both. Load it into an empty database (the harness and quickstart use `demo`).
CREATE TABLE customers (
  id int PRIMARY KEY,
  name varchar(100) NOT NULL,
  email varchar(255) NOT NULL,
  ssn varchar(11) NOT NULL,          -- fake US SSNs (the 900 range is never issued)
  card_number varchar(19) NOT NULL   -- well-known test card numbers
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO customers VALUES
  (1, 'Ada Example',     'ada@example.com',     '900-12-3456', '4111111111111111'),
  (2, 'Brook Sample',    'brook@example.org',   '900-23-4567', '5555555555554444'),
  (3, 'Casey Placeholder','casey@example.net',  '900-34-5678', '378282246310005'),
  (4, 'Drew Testcase',   'drew@example.com',    '900-45-6789', '6011111111111117');
CREATE TABLE orders (
  id int NOT NULL AUTO_INCREMENT PRIMARY KEY,
  customer_id int,
  amount decimal(10,2) NOT NULL,
  placed_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
  FOREIGN KEY (customer_id) REFERENCES customers(id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO orders (customer_id, amount)
  WITH RECURSIVE g (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 40)
  SELECT 1 + (n % 4), round(rand() * 200, 2) FROM g;

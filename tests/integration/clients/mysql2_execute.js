// An npm mysql2 client for the MySQL integration tests: runs one statement with execute()
// (a server-side prepared statement: COM_STMT_PREPARE / COM_STMT_EXECUTE, rows in the binary
// protocol) over TLS verified against CA_FILE, the caller's token (SLUICE_TOKEN) as the password,
// and prints its rows tab-separated (NULL as \N), or "affected N". An error is printed as
// "ERROR <errno> (<sqlstate>): <message>" with exit code 1. A parameter spelled \N is NULL.
//
//   node mysql2_execute.js PORT CA_FILE USER DATABASE SQL [PARAM...]
// mysql2 comes from NODE_PATH (scripts/test installs the pinned version).
'use strict';
const fs = require('fs');
const mysql = require('mysql2/promise');

async function main() {
  const [port, ca, user, database, sql, ...params] = process.argv.slice(2);
  const conn = await mysql.createConnection({
    host: '127.0.0.1',
    port: Number(port),
    user,
    database,
    password: process.env.SLUICE_TOKEN,
    ssl: {ca: fs.readFileSync(ca)},
    connectTimeout: 10000,
  });
  try {
    const [rows] = await conn.execute(sql, params.map((p) => (p === '\\N' ? null : p)));
    if (!Array.isArray(rows)) {
      console.log(`affected ${rows.affectedRows}`);
      return;
    }
    const out = [];
    for (const row of rows) {
      out.push(Object.values(row).map((v) => (v === null ? '\\N' : String(v))).join('\t'));
    }
    if (out.length) process.stdout.write(out.join('\n') + '\n');
  } finally {
    await conn.end();
  }
}

main().catch((e) => {
  console.error(`ERROR ${e.errno} (${e.sqlState}): ${e.message}`);
  process.exit(1);
});

// A MariaDB Connector/C client for the MySQL integration tests: the two prepared-statement paths
// that no packaged command-line client drives.
//
//   mysql_stmt cursor HOST PORT USER DB CA PREFETCH SQL
//     Prepares SQL, opens a read-only cursor on it (STMT_ATTR_CURSOR_TYPE) with PREFETCH rows per
//     COM_STMT_FETCH, and prints every row tab-separated (NULL as \N). Executes it twice (the
//     second execution reopens the cursor) with a line "--" between the two.
//   mysql_stmt bulk HOST PORT USER DB CA SQL ROW...
//     Prepares SQL and executes it once over all ROWs (STMT_ATTR_ARRAY_SIZE: MariaDB's
//     COM_STMT_BULK_EXECUTE), each ROW its parameters separated by '|' (\N for NULL), bound as
//     strings. Prints "affected N".
//
// The caller's token comes in SLUICE_TOKEN; the connection is TLS, verified against CA. An error
// is printed as "ERROR <code> (<sqlstate>): <message>" and exits 1.
#include <mysql.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

// A statement handle closed on every path (the tests run this client under LeakSanitizer too).
struct StmtCloser {
  void operator()(MYSQL_STMT* s) const { mysql_stmt_close(s); }
};
using Stmt = std::unique_ptr<MYSQL_STMT, StmtCloser>;

int Fail(MYSQL* m, MYSQL_STMT* s) {
  if (s != nullptr) {
    std::fprintf(stderr, "ERROR %u (%s): %s\n", mysql_stmt_errno(s), mysql_stmt_sqlstate(s),
                 mysql_stmt_error(s));
  } else {
    std::fprintf(stderr, "ERROR %u (%s): %s\n", mysql_errno(m), mysql_sqlstate(m), mysql_error(m));
  }
  return 1;
}

std::vector<std::string> Split(const std::string& row) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t bar = row.find('|', start);
    out.push_back(row.substr(start, bar == std::string::npos ? std::string::npos : bar - start));
    if (bar == std::string::npos) return out;
    start = bar + 1;
  }
}

int Cursor(MYSQL* m, const char* sql, unsigned long prefetch) {
  Stmt owned(mysql_stmt_init(m));
  MYSQL_STMT* s = owned.get();
  if (mysql_stmt_prepare(s, sql, std::strlen(sql)) != 0) return Fail(m, s);
  unsigned long type = CURSOR_TYPE_READ_ONLY;
  if (mysql_stmt_attr_set(s, STMT_ATTR_CURSOR_TYPE, &type) != 0 ||
      mysql_stmt_attr_set(s, STMT_ATTR_PREFETCH_ROWS, &prefetch) != 0) {
    return Fail(m, s);
  }
  const unsigned n = mysql_stmt_field_count(s);
  std::vector<std::vector<char>> buffers(n, std::vector<char>(4096));
  std::vector<unsigned long> lengths(n);
  std::vector<my_bool> nulls(n);
  std::vector<MYSQL_BIND> binds(n);
  for (unsigned i = 0; i < n; ++i) {
    std::memset(&binds[i], 0, sizeof(MYSQL_BIND));
    binds[i].buffer_type = MYSQL_TYPE_STRING;
    binds[i].buffer = buffers[i].data();
    binds[i].buffer_length = buffers[i].size();
    binds[i].length = &lengths[i];
    binds[i].is_null = &nulls[i];
  }
  for (int round = 0; round < 2; ++round) {
    if (round > 0) std::printf("--\n");
    if (mysql_stmt_execute(s) != 0) return Fail(m, s);
    if (n > 0 && mysql_stmt_bind_result(s, binds.data()) != 0) return Fail(m, s);
    int rc;
    while ((rc = mysql_stmt_fetch(s)) == 0 || rc == MYSQL_DATA_TRUNCATED) {
      for (unsigned i = 0; i < n; ++i) {
        if (i > 0) std::fputc('\t', stdout);
        if (nulls[i]) {
          std::fputs("\\N", stdout);
        } else {
          std::fwrite(buffers[i].data(), 1, std::min<size_t>(lengths[i], buffers[i].size()),
                      stdout);
        }
      }
      std::fputc('\n', stdout);
    }
    if (rc != MYSQL_NO_DATA) return Fail(m, s);
  }
  return 0;
}

int Bulk(MYSQL* m, const char* sql, int argc, char** rows_in) {
  Stmt owned(mysql_stmt_init(m));
  MYSQL_STMT* s = owned.get();
  if (mysql_stmt_prepare(s, sql, std::strlen(sql)) != 0) return Fail(m, s);
  const unsigned params = mysql_stmt_param_count(s);
  const unsigned rows = static_cast<unsigned>(argc);
  // Column-wise arrays, as STMT_ATTR_ARRAY_SIZE binds them: a char* and a length per row.
  std::vector<std::vector<std::string>> values(params, std::vector<std::string>(rows));
  std::vector<std::vector<char*>> pointers(params, std::vector<char*>(rows));
  std::vector<std::vector<unsigned long>> lengths(params, std::vector<unsigned long>(rows));
  std::vector<std::vector<char>> indicators(params, std::vector<char>(rows, STMT_INDICATOR_NONE));
  for (unsigned r = 0; r < rows; ++r) {
    const std::vector<std::string> cells = Split(rows_in[r]);
    if (cells.size() != params) {
      std::fprintf(stderr, "row %u has %zu values, the statement %u parameters\n", r + 1,
                   cells.size(), params);
      return 2;
    }
    for (unsigned p = 0; p < params; ++p) {
      values[p][r] = cells[p];
      if (cells[p] == "\\N") indicators[p][r] = STMT_INDICATOR_NULL;
    }
  }
  std::vector<MYSQL_BIND> binds(params);
  for (unsigned p = 0; p < params; ++p) {
    for (unsigned r = 0; r < rows; ++r) {
      pointers[p][r] = values[p][r].data();
      lengths[p][r] = values[p][r].size();
    }
    std::memset(&binds[p], 0, sizeof(MYSQL_BIND));
    binds[p].buffer_type = MYSQL_TYPE_STRING;
    binds[p].buffer = pointers[p].data();
    binds[p].length = lengths[p].data();
    binds[p].u.indicator = indicators[p].data();
  }
  unsigned int array_size = rows;
  if (mysql_stmt_attr_set(s, STMT_ATTR_ARRAY_SIZE, &array_size) != 0) return Fail(m, s);
  if (mysql_stmt_bind_param(s, binds.data()) != 0) return Fail(m, s);
  if (mysql_stmt_execute(s) != 0) return Fail(m, s);
  std::printf("affected %llu\n", static_cast<unsigned long long>(mysql_stmt_affected_rows(s)));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool cursor = argc == 9 && std::strcmp(argv[1], "cursor") == 0;
  const bool bulk = argc >= 8 && std::strcmp(argv[1], "bulk") == 0;
  if (!cursor && !bulk) {
    std::fprintf(stderr,
                 "usage: %s cursor HOST PORT USER DB CA PREFETCH SQL\n"
                 "       %s bulk HOST PORT USER DB CA SQL ROW...\n",
                 argv[0], argv[0]);
    return 2;
  }
  const char* token = std::getenv("SLUICE_TOKEN");
  MYSQL* m = mysql_init(nullptr);
  my_bool verify = 1;
  mysql_optionsv(m, MYSQL_OPT_SSL_CA, argv[6]);
  mysql_optionsv(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
  if (mysql_real_connect(m, argv[2], argv[4], token, argv[5],
                         static_cast<unsigned>(std::atoi(argv[3])), nullptr, 0) == nullptr) {
    const int rc = Fail(m, nullptr);
    mysql_close(m);
    return rc;
  }
  const int rc = cursor ? Cursor(m, argv[8], std::strtoul(argv[7], nullptr, 10))
                        : Bulk(m, argv[7], argc - 8, argv + 8);
  mysql_close(m);
  return rc;
}

// A libpq client that pulls a large result through the agent in single-row mode and reports how
// many rows and bytes arrived. Used by test_postgres_proxy.py to check that the agent streams
// results in bounded memory.
//
// Usage: large_result "CONNINFO" "SQL"   (the token comes from PGPASSWORD)
// Prints: "rows=N bytes=M"; exits non-zero with libpq's message on failure.
#include <libpq-fe.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CONNINFO SQL\n", argv[0]);
    return 2;
  }
  PGconn* conn = PQconnectdb(argv[1]);
  if (PQstatus(conn) != CONNECTION_OK) {
    std::fprintf(stderr, "connect: %s", PQerrorMessage(conn));
    PQfinish(conn);
    return 1;
  }
  if (!PQsendQuery(conn, argv[2]) || !PQsetSingleRowMode(conn)) {
    std::fprintf(stderr, "query: %s", PQerrorMessage(conn));
    PQfinish(conn);
    return 1;
  }
  long long rows = 0, bytes = 0;
  int rc = 0;
  while (PGresult* res = PQgetResult(conn)) {
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_SINGLE_TUPLE) {
      ++rows;
      for (int c = 0; c < PQnfields(res); ++c) bytes += PQgetlength(res, 0, c);
    } else if (st != PGRES_TUPLES_OK) {
      std::fprintf(stderr, "result: %s", PQresultErrorMessage(res));
      rc = 1;
    }
    PQclear(res);
  }
  std::printf("rows=%lld bytes=%lld\n", rows, bytes);
  PQfinish(conn);
  return rc;
}

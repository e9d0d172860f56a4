#include "agent/postgres/guardrails.h"

namespace sluice::agent::postgres {

const std::vector<std::string>& DangerousFunctions() {
  static const auto* f = new std::vector<std::string>{
      "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
      "pg_promote", "pg_switch_wal", "pg_create_restore_point", "pg_drop_replication_slot",
      "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_file_write",
      "pg_file_rename", "pg_file_unlink", "lo_import", "lo_export", "dblink", "dblink_exec",
      "dblink_connect", "dblink_connect_u", "dblink_send_query",
      // SQL given as a string runs where the agent cannot see it.
      "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "ts_stat", "ts_rewrite",
      "dblink_open", "dblink_build_sql_insert"};
  return *f;
}

}  // namespace sluice::agent::postgres

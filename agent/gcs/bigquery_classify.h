// What one BigQuery API v2 request does (https://cloud.google.com/bigquery/docs/reference/rest),
// decided from what will run: the REST method and the resource its path names, and for jobs, the
// job's configuration — a query job's SQL (agent/gcs/googlesql.h), its destination table and
// write disposition, load, extract and copy jobs. The result is a statement-like record for the
// session core's gate, like a SQL statement:
//
//   read    gets and lists of projects, datasets, tables, routines, models, row access policies;
//           tabledata.list; a query whose SQL only reads
//   other   a job's own status, results and cancel (jobs.get, jobs.getQueryResults, jobs.cancel)
//   write   tabledata.insertAll; a query that writes (DML, a destination table), load, copy and
//           extract jobs (extract is export_data to guardrails, load is load_data)
//   ddl     dataset, table, routine and model create / change / delete (a dataset delete is
//           drop_database, a table delete drop_table), DDL in SQL
//   dcl     dataset access entries in a create or change, setIamPolicy, GRANT / REVOKE in SQL
//
// Everything upstream runs as one service account, so the agent keeps ownership: a request that
// names a job (`job_id`) is for the caller who created it (the listener checks), a request that
// creates one (`creates_job`) binds it. Jobs of the project cannot be listed through the agent
// (they would show other callers' jobs and their SQL). A request for another project than the
// Connection's is refused. Legacy SQL is refused (the agent reads GoogleSQL only), and so is
// anything it does not know: uploads through /upload, unknown methods and job types.
#pragma once

#include <map>
#include <string>

#include "absl/strings/string_view.h"
#include "agent/gcs/googlesql.h"
#include "agent/session/statement_facts.h"
#include "common/audit/events.h"

namespace sluice::agent::gcs {

struct BigQueryRequest : session::StatementFacts {
  // `kind` (StatementFacts) is the API method: "jobs.query", "datasets.delete", ...
  std::string project;
  std::string dataset;
  std::string table;
  std::string job_id;        // a job the request names (the caller must own it)
  bool creates_job = false;  // jobs.insert, jobs.query: the answer's job is the caller's
  std::string sql;           // a query's SQL, as the caller sent it
  // Tables whose rows it copies somewhere the agent cannot mask them (a table, Cloud Storage): an
  // extract's or a copy's source, what a query with a destination table reads, the sources of
  // INSERT ... SELECT, MERGE, CREATE ... AS SELECT and EXPORT DATA.
  std::vector<session::Relation> copied_from;
  GoogleSqlAnalysis analysis;
  // Non-empty: refused before anything is sent, with this reason (and refusal_kind).
  std::string refusal;
  audit::RefusalKind refusal_kind = audit::RefusalKind::kNotSupported;
};

// Whether `path` (without a Connection's segment) is BigQuery's discovery document
// (`bq --api=...` fetches `/$discovery/rest?version=v2` first): read like any request, its links
// rewritten to the agent's address on the way back.
bool IsBigQueryDiscovery(absl::string_view path);
// Whether `path` is BigQuery's rather than Cloud Storage's.
bool IsBigQueryPath(absl::string_view path);

// `path`: the request's path after the service's root (it begins "/bigquery/v2/"),
// percent-encoded, without the query; `query`: its decoded parameters; `body`: the request's (JSON
// for the methods that carry one); `project`: the Connection's project (a request naming another
// is refused).
BigQueryRequest ClassifyBigQuery(absl::string_view method, absl::string_view path,
                                 const std::multimap<std::string, std::string>& query,
                                 absl::string_view body, absl::string_view project);

}  // namespace sluice::agent::gcs

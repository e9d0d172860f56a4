#include "agent/gcs/bigquery_classify.h"

#include <algorithm>
#include <iterator>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/gcs/classify.h"

namespace sluice::agent::gcs {
namespace {

using session::StatementClass;

constexpr size_t kMaxSegmentBytes = 1024;

// The options of a query (jobs.query's QueryRequest, a query job's JobConfigurationQuery) the
// agent knows what they do; any other is refused. Left out on purpose: tableDefinitions (external
// tables: Cloud Storage objects read as the service account, past Cloud Storage's own policy),
// userDefinedFunctionResources (code loaded from Cloud Storage), scriptOptions,
// connectionProperties and createSession (sessions carry temporary state between requests).
bool KnownQueryOption(const std::string& name) {
  static const char* const kKnown[] = {"kind",
                                       "query",
                                       "useLegacySql",
                                       "defaultDataset",
                                       "destinationTable",
                                       "writeDisposition",
                                       "createDisposition",
                                       "priority",
                                       "useQueryCache",
                                       "maximumBytesBilled",
                                       "queryParameters",
                                       "parameterMode",
                                       "dryRun",
                                       "labels",
                                       "location",
                                       "timeoutMs",
                                       "maxResults",
                                       "requestId",
                                       "formatOptions",
                                       "preserveNulls",
                                       "jobTimeoutMs",
                                       "continuous",
                                       "flattenResults",
                                       "allowLargeResults",
                                       "jobCreationMode",
                                       "maximumBillingTier",
                                       "schemaUpdateOptions",
                                       "destinationEncryptionConfiguration",
                                       "clustering",
                                       "timePartitioning",
                                       "rangePartitioning"};
  for (const char* k : kKnown) {
    if (name == k) return true;
  }
  return false;
}

// A table reference of a job's configuration ({projectId, datasetId, tableId}).
session::Relation TableOf(const nlohmann::json& j) {
  session::Relation rel;
  if (!j.is_object()) return rel;
  if (j.contains("datasetId") && j["datasetId"].is_string())
    rel.schema = absl::AsciiStrToLower(j["datasetId"].get<std::string>());
  if (j.contains("tableId") && j["tableId"].is_string())
    rel.table = absl::AsciiStrToLower(j["tableId"].get<std::string>());
  return rel;
}

// A job's SQL and where its rows go: the SQL's own class, raised to a write when the job writes
// a table (a destination, a write disposition that truncates or appends). Returns why the query
// is refused ("" when it is not).
std::string ReadQuery(const nlohmann::json& q, absl::string_view dataset, BigQueryRequest* r) {
  for (const auto& [name, value] : q.items()) {
    if (!KnownQueryOption(name)) {
      return absl::StrCat("the query option ", name.substr(0, 64),
                          " is not let through (the agent does not know what it does)");
    }
  }
  if (q.contains("continuous") && !(q["continuous"].is_boolean() && !q["continuous"].get<bool>())) {
    return "continuous queries are not let through";
  }
  auto legacy = q.find("useLegacySql");
  const bool standard_marker =
      q.contains("query") && q["query"].is_string() &&
      absl::StartsWithIgnoreCase(absl::StripLeadingAsciiWhitespace(q["query"].get<std::string>()),
                                 "#standardsql");
  // jobs.query and query jobs run legacy SQL unless told otherwise.
  if (!standard_marker && (legacy == q.end() || !legacy->is_boolean() || legacy->get<bool>())) {
    return "legacy SQL is not let through; send the query as GoogleSQL "
           "(useLegacySql: false, or bq query --nouse_legacy_sql)";
  }
  if (!q.contains("query") || !q["query"].is_string()) {
    return "the query job has no SQL";
  }
  r->sql = q["query"].get<std::string>();
  std::string default_dataset(dataset);
  auto dd = q.find("defaultDataset");
  if (dd != q.end() && dd->is_object() && dd->contains("datasetId") &&
      (*dd)["datasetId"].is_string()) {
    default_dataset = (*dd)["datasetId"].get<std::string>();
  }
  r->analysis = AnalyzeGoogleSql(r->sql, default_dataset);
  r->cls = r->analysis.overall;
  if (r->cls == StatementClass::kUnknown) {
    return absl::StrCat("the query cannot be let through: ", r->analysis.parse_error);
  }
  for (const auto& s : r->analysis.statements) {
    for (const auto& g : s.guarded) r->guarded.push_back(g);
    for (const auto& rel : s.relations) r->relations.push_back(rel);
    for (const auto& f : s.functions) r->functions.push_back(f);
  }
  for (const auto& rel : r->relations) {
    // Every job runs as the one service account: the views of its jobs and sessions show every
    // caller's SQL, as listing the project's jobs would.
    if (rel.schema == "information_schema" &&
        (absl::StartsWith(rel.table, "jobs") || absl::StartsWith(rel.table, "sessions"))) {
      return absl::StrCat("INFORMATION_SCHEMA.", absl::AsciiStrToUpper(rel.table),
                          " is not let through: it shows other callers' jobs");
    }
  }
  for (const auto& s : r->analysis.statements) {
    // A statement that writes what it reads: its sources, past its target.
    const bool copies = absl::StartsWith(s.kind, "INSERT") || absl::StartsWith(s.kind, "MERGE") ||
                        absl::StartsWith(s.kind, "CREATE") || s.kind == "EXPORT DATA";
    const size_t from = s.kind == "EXPORT DATA" ? 0 : 1;
    for (size_t i = from; copies && i < s.relations.size(); ++i)
      r->copied_from.push_back(s.relations[i]);
  }
  auto dest = q.find("destinationTable");
  if (dest != q.end() && dest->is_object()) {
    r->copied_from = r->relations;
    if (r->cls == StatementClass::kRead || r->cls == StatementClass::kEmpty ||
        r->cls == StatementClass::kOther) {
      r->cls = StatementClass::kWrite;
    }
    r->relations.insert(r->relations.begin(), TableOf(*dest));
    auto disposition = q.find("writeDisposition");
    if (disposition != q.end() && disposition->is_string() &&
        disposition->get<std::string>() == "WRITE_TRUNCATE") {
      r->guarded.push_back("truncate");
    }
  }
  return "";
}

}  // namespace

bool IsBigQueryDiscovery(absl::string_view path) {
  return path == "/$discovery/rest" || path == "/%24discovery/rest" ||
         path == "/discovery/v1/apis/bigquery/v2/rest";
}

bool IsBigQueryPath(absl::string_view path) {
  return IsBigQueryDiscovery(path) || absl::StartsWith(path, "/bigquery/") ||
         absl::StartsWith(path, "/upload/bigquery/");
}

BigQueryRequest ClassifyBigQuery(absl::string_view method, absl::string_view path,
                                 const std::multimap<std::string, std::string>& query,
                                 absl::string_view body, absl::string_view project) {
  BigQueryRequest r;
  auto refuse = [&](std::string why) {
    r.refusal = absl::StrCat("Sluice: ", why);
    r.cls = StatementClass::kUnknown;
    return r;
  };
  for (const auto& [name, value] : query) {
    if (CarriesCredential(name))
      return refuse(absl::StrCat("a credential in the query (", name, ") is not let through"));
  }
  if (IsBigQueryDiscovery(path)) {
    if (method != "GET") return refuse("an unknown BigQuery method");
    r.kind = "discovery.get";
    r.cls = StatementClass::kRead;
    return r;
  }
  if (absl::StartsWith(path, "/upload/"))
    return refuse(
        "uploads to BigQuery (/upload/bigquery/v2) are not relayed; load from Cloud Storage");
  constexpr absl::string_view kRoot = "/bigquery/v2/";
  if (!absl::StartsWith(path, kRoot)) return refuse("not a BigQuery API v2 path");
  std::vector<std::string> seg;
  for (absl::string_view part : absl::StrSplit(path.substr(kRoot.size()), '/')) {
    std::string decoded;
    if (part.empty() || part.size() > kMaxSegmentBytes || !PercentDecode(part, &decoded))
      return refuse("a malformed path segment");
    seg.push_back(std::move(decoded));
  }
  const std::string m(method);
  const bool get = m == "GET";
  const bool post = m == "POST";
  const bool change = m == "PATCH" || m == "PUT";
  const bool del = m == "DELETE";
  auto set = [&](const char* kind, StatementClass cls) {
    r.kind = kind;
    r.cls = cls;
  };
  if (seg.empty() || seg[0] != "projects") return refuse("an unknown BigQuery method");
  if (seg.size() == 1) {
    if (!get) return refuse("an unknown BigQuery method");
    set("projects.list", StatementClass::kRead);
    return r;
  }
  r.project = seg[1];
  if (!project.empty() && r.project != project) {
    r.refusal_kind = audit::RefusalKind::kNoAccessRule;
    return refuse(absl::StrCat("project ", r.project, " is not this connection's (", project, ")"));
  }
  // A JSON body, where the method carries one.
  nlohmann::json j;
  auto json_body = [&]() -> bool {
    if (absl::StripAsciiWhitespace(body).empty()) {
      j = nlohmann::json::object();
      return true;
    }
    j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    return j.is_object();
  };
  const size_t n = seg.size();
  if (n == 3 && seg[2] == "serviceAccount" && get) {
    set("projects.getServiceAccount", StatementClass::kRead);
    return r;
  }
  if (n >= 3 && seg[2] == "queries") {
    if (n == 3 && post) {
      set("jobs.query", StatementClass::kUnknown);
      if (!json_body()) return refuse("the query's body is not a JSON object");
      r.creates_job = true;
      if (std::string why = ReadQuery(j, "", &r); !why.empty()) return refuse(why);
      return r;
    }
    if (n == 4 && get) {
      set("jobs.getQueryResults", StatementClass::kOther);
      r.job_id = seg[3];
      return r;
    }
    return refuse("an unknown BigQuery method");
  }
  if (n >= 3 && seg[2] == "jobs") {
    if (n == 3 && get) {
      return refuse(
          "the project's jobs cannot be listed through the agent: they would show other callers' "
          "jobs (get your own by id)");
    }
    if (n == 3 && post) {
      set("jobs.insert", StatementClass::kUnknown);
      if (!json_body()) return refuse("the job's body is not a JSON object");
      r.creates_job = true;
      auto ref = j.find("jobReference");
      if (ref != j.end() && ref->is_object() && ref->contains("projectId") &&
          (*ref)["projectId"].is_string() && !project.empty() &&
          (*ref)["projectId"].get<std::string>() != project) {
        r.refusal_kind = audit::RefusalKind::kNoAccessRule;
        return refuse("the job's project is not this connection's");
      }
      auto config = j.find("configuration");
      if (config == j.end() || !config->is_object()) return refuse("the job has no configuration");
      for (const auto& [name, value] : config->items()) {
        static const char* const kKnown[] = {"query",  "load",   "extract",      "copy",
                                             "dryRun", "labels", "jobTimeoutMs", "jobType"};
        if (std::find(std::begin(kKnown), std::end(kKnown), name) == std::end(kKnown)) {
          return refuse(absl::StrCat("the job option ", name.substr(0, 64),
                                     " is not let through (the agent does not know what it does)"));
        }
      }
      int kinds = 0;
      for (const char* k : {"query", "load", "extract", "copy"}) kinds += config->contains(k);
      if (kinds != 1) return refuse("a job must be exactly one of query, load, extract or copy");
      if (config->contains("query")) {
        if (std::string why = ReadQuery((*config)["query"], "", &r); !why.empty())
          return refuse(why);
      } else if (config->contains("load")) {
        r.cls = StatementClass::kWrite;
        r.guarded.push_back("load_data");
        r.relations.push_back(
            TableOf((*config)["load"].value("destinationTable", nlohmann::json())));
      } else if (config->contains("extract")) {
        r.cls = StatementClass::kWrite;
        r.guarded.push_back("export_data");
        r.relations.push_back(TableOf((*config)["extract"].value("sourceTable", nlohmann::json())));
        r.copied_from = r.relations;
      } else {
        r.cls = StatementClass::kWrite;
        const nlohmann::json& copy = (*config)["copy"];
        r.relations.push_back(TableOf(copy.value("destinationTable", nlohmann::json())));
        r.relations.push_back(TableOf(copy.value("sourceTable", nlohmann::json())));
        r.copied_from = {r.relations.back()};
      }
      return r;
    }
    if (n == 4 && get) {
      set("jobs.get", StatementClass::kOther);
      r.job_id = seg[3];
      return r;
    }
    if (n == 5 && post && seg[4] == "cancel") {
      set("jobs.cancel", StatementClass::kOther);
      r.job_id = seg[3];
      return r;
    }
    if (n == 5 && del && seg[4] == "delete") {
      set("jobs.delete", StatementClass::kWrite);
      r.job_id = seg[3];
      return r;
    }
    return refuse("an unknown BigQuery method");
  }
  if (seg[2] != "datasets") return refuse("an unknown BigQuery method");
  if (n == 3) {
    if (get) {
      set("datasets.list", StatementClass::kRead);
      return r;
    }
    if (post) {
      set("datasets.insert", StatementClass::kDdl);
      if (!json_body()) return refuse("the dataset's body is not a JSON object");
      if (j.contains("access")) r.cls = StatementClass::kDcl;
      auto ref = j.find("datasetReference");
      if (ref != j.end() && ref->is_object() && ref->contains("datasetId") &&
          (*ref)["datasetId"].is_string()) {
        r.dataset = (*ref)["datasetId"].get<std::string>();
        r.relations.push_back({absl::AsciiStrToLower(r.dataset), ""});
      }
      return r;
    }
    return refuse("an unknown BigQuery method");
  }
  r.dataset = seg[3];
  const std::string ds = absl::AsciiStrToLower(r.dataset);
  if (n == 4) {
    r.relations.push_back({ds, ""});
    if (get) {
      set("datasets.get", StatementClass::kRead);
    } else if (change) {
      set(m == "PATCH" ? "datasets.patch" : "datasets.update", StatementClass::kDdl);
      if (!json_body()) return refuse("the dataset's body is not a JSON object");
      if (j.contains("access")) r.cls = StatementClass::kDcl;
    } else if (del) {
      set("datasets.delete", StatementClass::kDdl);
      r.guarded.push_back("drop_database");
    } else {
      return refuse("an unknown BigQuery method");
    }
    return r;
  }
  const std::string& collection = seg[4];
  if (collection == "tables" || collection == "routines" || collection == "models") {
    const std::string prefix = collection;
    if (n == 5) {
      r.relations.push_back({ds, "*"});
      if (get) {
        r.kind = prefix + ".list";
        r.cls = StatementClass::kRead;
        return r;
      }
      if (post && collection != "models") {
        r.kind = prefix + ".insert";
        r.cls = StatementClass::kDdl;
        if (!json_body()) return refuse("the body is not a JSON object");
        return r;
      }
      return refuse("an unknown BigQuery method");
    }
    // "<table>:setIamPolicy" and the like name a table and a verb.
    std::string name = seg[5];
    std::string verb;
    if (const size_t colon = name.find(':'); colon != std::string::npos) {
      verb = name.substr(colon + 1);
      name = name.substr(0, colon);
    }
    if (collection == "tables") r.table = name;
    r.relations.push_back({ds, absl::AsciiStrToLower(name)});
    if (!verb.empty()) {
      if (n != 6 || !post || collection != "tables") return refuse("an unknown BigQuery method");
      if (verb == "getIamPolicy" || verb == "testIamPermissions") {
        r.kind = "tables." + verb;
        r.cls = StatementClass::kRead;
      } else if (verb == "setIamPolicy") {
        set("tables.setIamPolicy", StatementClass::kDcl);
      } else {
        return refuse("an unknown BigQuery method");
      }
      return r;
    }
    if (n == 6) {
      if (get) {
        r.kind = prefix + ".get";
        r.cls = StatementClass::kRead;
      } else if (change) {
        r.kind = prefix + (m == "PATCH" ? ".patch" : ".update");
        r.cls = StatementClass::kDdl;
      } else if (del) {
        r.kind = prefix + ".delete";
        r.cls = StatementClass::kDdl;
        if (collection == "tables") r.guarded.push_back("drop_table");
      } else {
        return refuse("an unknown BigQuery method");
      }
      return r;
    }
    if (collection == "tables" && n == 7 && seg[6] == "data" && get) {
      set("tabledata.list", StatementClass::kRead);
      return r;
    }
    if (collection == "tables" && n == 7 && seg[6] == "insertAll" && post) {
      set("tabledata.insertAll", StatementClass::kWrite);
      return r;
    }
    if (collection == "tables" && n == 7 && seg[6] == "rowAccessPolicies" && get) {
      set("rowAccessPolicies.list", StatementClass::kRead);
      return r;
    }
    return refuse("an unknown BigQuery method");
  }
  return refuse("an unknown BigQuery method");
}

}  // namespace sluice::agent::gcs

// libFuzzer target: what the agent reads of a cloud API request before anything is sent — the
// GoogleSQL classifier (agent/gcs/googlesql.h), BigQuery's request classification with the input
// as a query's body, and S3's with the input split into a path and a query. Nothing may crash,
// hang or read out of bounds, whatever the caller sends.
#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/gcs/bigquery_classify.h"
#include "agent/gcs/googlesql.h"
#include "agent/s3/classify.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  using namespace sluice::agent;
  switch (data[0] % 3) {
    case 0:
      (void)gcs::AnalyzeGoogleSql(input, "ds");
      break;
    case 1: {
      const std::multimap<std::string, std::string> none;
      (void)gcs::ClassifyBigQuery("POST", "/bigquery/v2/projects/p/jobs", none, input, "p");
      (void)gcs::ClassifyBigQuery("POST", "/bigquery/v2/projects/p/queries", none, input, "p");
      break;
    }
    default: {
      const size_t q = input.find('?');
      const std::string path = input.substr(0, q);
      const std::string query = q == std::string::npos ? "" : input.substr(q + 1);
      (void)s3::ClassifyS3("PUT", path, query, {{"x-amz-copy-source", query}});
      (void)s3::ClassifyS3("GET", path, query, {});
      break;
    }
  }
  return 0;
}

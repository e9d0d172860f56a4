#include "common/log.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json_writer.h"

namespace sluice {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kText)};
absl::Mutex g_mu;
std::string* g_component ABSL_GUARDED_BY(g_mu) = new std::string("sluice");

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarning:
      return "WARN";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?";
}

const char* JsonLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "unknown";
}

}  // namespace

void SetLogFormat(LogFormat format) { g_format.store(static_cast<int>(format)); }

bool ParseLogFormat(absl::string_view name, LogFormat* format) {
  if (name == "text") {
    *format = LogFormat::kText;
  } else if (name == "json") {
    *format = LogFormat::kJson;
  } else {
    return false;
  }
  return true;
}

std::string FormatLogLine(LogFormat format, absl::Time time, LogLevel level,
                          absl::string_view component, absl::string_view message) {
  std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
  if (format == LogFormat::kText) {
    std::string level_name = LevelName(level);
    level_name.resize(std::max<size_t>(level_name.size(), 5), ' ');
    return absl::StrCat(ts, " ", level_name, " ", component, ": ", message, "\n");
  }
  // One JSON object per line: the message is escaped (a newline in it stays in the line), and
  // invalid UTF-8 becomes U+FFFD, so that every line parses.
  std::string out = "{\"time\":";
  AppendJsonString(&out, ts);
  absl::StrAppend(&out, ",\"level\":\"", JsonLevelName(level), "\",\"component\":");
  AppendJsonString(&out, component);
  out.append(",\"message\":");
  AppendJsonString(&out, message);
  out.append("}\n");
  return out;
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

void SetLogComponent(absl::string_view component) {
  absl::MutexLock lock(&g_mu);
  *g_component = std::string(component);
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void LogLine(LogLevel level, absl::string_view message) {
  const absl::Time now = absl::Now();
  const auto format = static_cast<LogFormat>(g_format.load());
  absl::MutexLock lock(&g_mu);
  const std::string line = FormatLogLine(format, now, level, *g_component, message);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace sluice

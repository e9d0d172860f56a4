#include "cli/replay.h"

#include <algorithm>

#include "absl/base/internal/endian.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/audit/events.h"
#include "common/audit/recording.h"
#include "common/wire/postgres/messages.h"

namespace sluice::cli {
namespace pg = wire::postgres;
namespace {

constexpr size_t kMaxCellChars = 48;
constexpr size_t kMaxTextChars = 2000;

// A value as the client got it: text as it is; the common binary types decoded, others as hex.
std::string Value(const std::optional<std::string>& v, int32_t type_oid, int16_t format) {
  if (!v) return "NULL";
  if (format == 0) return Printable(*v, kMaxCellChars);
  const std::string& b = *v;
  if (type_oid == 16 && b.size() == 1) return b[0] ? "t" : "f";
  if (type_oid == 21 && b.size() == 2)
    return absl::StrCat(static_cast<int16_t>(absl::big_endian::Load16(b.data())));
  if (type_oid == 23 && b.size() == 4)
    return absl::StrCat(static_cast<int32_t>(absl::big_endian::Load32(b.data())));
  if (type_oid == 20 && b.size() == 8)
    return absl::StrCat(static_cast<int64_t>(absl::big_endian::Load64(b.data())));
  if (type_oid == 25 || type_oid == 1043 || type_oid == 19) return Printable(b, kMaxCellChars);
  std::string hex = absl::BytesToHexString(absl::string_view(b).substr(0, kMaxCellChars / 2));
  return absl::StrCat("\\x", hex, b.size() > kMaxCellChars / 2 ? "..." : "");
}

std::string Quoted(const audit::StatementText& t) {
  return absl::StrCat("\"", Printable(t.statement, 60), "\"");
}

}  // namespace

std::string Printable(absl::string_view v, size_t max) {
  std::string out;
  for (char c : v.substr(0, max)) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\x%02x", static_cast<unsigned char>(c));
    } else {
      out.push_back(c);
    }
  }
  if (v.size() > max) out += "...";
  return out;
}

void TranscriptPrinter::Header(const v1::SessionSummary& s) {
  std::fprintf(out_, "session %s on agent %s\n", s.session_id().c_str(), s.agent_id().c_str());
  std::fprintf(out_, "identity %s (issuer %s) groups [%s]\n", s.subject().c_str(),
               s.issuer().c_str(), absl::StrJoin(s.groups(), ", ").c_str());
  std::fprintf(out_, "connection %s, %s access (rule %s), from %s, TLS %s\n",
               s.connection().c_str(), s.access().empty() ? "no" : s.access().c_str(),
               s.rule().empty() ? "-" : s.rule().c_str(), s.client_addr().c_str(),
               s.tls() ? "yes" : "no");
  std::fprintf(out_, "started %s UTC\n\n",
               absl::FormatTime("%Y-%m-%d %H:%M:%E3S", absl::FromUnixMillis(s.started_unix_ms()),
                                absl::UTCTimeZone())
                   .c_str());
}

void TranscriptPrinter::Line(uint64_t offset_us, const std::string& text) {
  std::fprintf(out_, "%+10.3fs  %s\n", static_cast<double>(offset_us) / 1e6, text.c_str());
}

void TranscriptPrinter::Note(const std::string& text) {
  std::fprintf(out_, "%12s  = %s\n", "", text.c_str());
}

void TranscriptPrinter::FlushTable() {
  if (!table_open_) return;
  table_open_ = false;
  std::vector<size_t> widths;
  for (const Column& c : columns_) widths.push_back(c.name.size());
  for (const auto& row : rows_) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i)
      widths[i] = std::max(widths[i], row[i].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (size_t i = 0; i < widths.size(); ++i) {
      std::string cell = i < cells.size() ? cells[i] : "";
      absl::StrAppend(&s, i == 0 ? "" : " | ", cell,
                      std::string(widths[i] - std::min(widths[i], cell.size()), ' '));
    }
    s.erase(s.find_last_not_of(' ') + 1);
    std::fprintf(out_, "%12s    %s\n", "", s.c_str());
  };
  std::vector<std::string> names;
  for (const Column& c : columns_) names.push_back(c.name);
  line(names);
  std::string rule;
  for (size_t i = 0; i < widths.size(); ++i)
    absl::StrAppend(&rule, i == 0 ? "" : "-+-", std::string(widths[i], '-'));
  std::fprintf(out_, "%12s    %s\n", "", rule.c_str());
  for (const auto& row : rows_) line(row);
  if (omitted_rows_ > 0) {
    std::fprintf(out_, "%12s    (%llu more rows, %llu bytes, not recorded)\n", "",
                 static_cast<unsigned long long>(omitted_rows_),
                 static_cast<unsigned long long>(omitted_bytes_));
  }
  rows_.clear();
  omitted_rows_ = omitted_bytes_ = 0;
}

void TranscriptPrinter::Omitted(uint64_t offset_us, uint64_t messages, uint64_t bytes) {
  if (table_open_) {
    omitted_rows_ += messages;
    omitted_bytes_ += bytes;
    return;
  }
  Line(offset_us, absl::StrCat("(", messages, " messages, ", bytes, " bytes, not recorded)"));
}

void TranscriptPrinter::Message(char kind, uint64_t offset_us, char type,
                                const std::string& payload) {
  if (protocol_ == audit::kProtocolMysql) {
    MysqlMessage(kind, offset_us, type, payload);
    return;
  }
  if (HttpProtocol()) {
    HttpMessage(kind, offset_us, type, payload);
    return;
  }
  const bool from_client = kind == audit::kRecordedFromClient;
  if (!(type == 'D' && !from_client && table_open_)) FlushTable();
  if (from_client) {
    switch (type) {
      case 'Q':
        if (auto q = pg::Query::Decode(payload); q.ok())
          Line(offset_us, "> " + Printable(q->sql, kMaxTextChars));
        return;
      case 'P':
        if (auto p = pg::Parse::Decode(payload); p.ok()) {
          Line(offset_us, absl::StrCat("> parse", p->statement.empty() ? "" : " " + p->statement,
                                       ": ", Printable(p->query, kMaxTextChars)));
        }
        return;
      case 'B':
        if (auto b = pg::Bind::Decode(payload); b.ok()) {
          std::vector<std::string> params;
          for (size_t i = 0; i < b->params.size(); ++i) {
            int16_t format = b->param_formats.empty()
                                 ? 0
                                 : b->param_formats[std::min(i, b->param_formats.size() - 1)];
            params.push_back(absl::StrCat("$", i + 1, "=", Value(b->params[i], 0, format)));
          }
          if (!params.empty())
            Line(offset_us, absl::StrCat("> bind ", absl::StrJoin(params, ", ")));
        }
        return;
      case 'd':
        Line(offset_us, absl::StrCat("> copy data (", payload.size(), " bytes)"));
        return;
      case 'c':
        Line(offset_us, "> copy done");
        return;
      case 'f':
        Line(offset_us, "> copy failed");
        return;
      case 'F':
        Line(offset_us, "> function call");
        return;
      case 'X':
        Line(offset_us, "> disconnect");
        return;
      default:
        return;  // Describe, Execute, Sync, Flush, Close: protocol steps, not content
    }
  }
  switch (type) {
    case 'T':
      if (auto t = pg::RowDescription::Decode(payload); t.ok()) {
        columns_.clear();
        for (const auto& f : t->fields)
          columns_.push_back(Column{Printable(f.name, kMaxCellChars), f.type_oid, f.format});
        table_open_ = true;
        table_offset_ = offset_us;
      }
      return;
    case 'D':
      if (auto d = pg::DataRow::Decode(payload); d.ok()) {
        if (!table_open_) {  // rows of a described statement: columns unknown
          columns_.assign(d->values.size(), Column{});
          table_open_ = true;
          table_offset_ = offset_us;
        }
        std::vector<std::string> row;
        for (size_t i = 0; i < d->values.size(); ++i) {
          const Column& c = i < columns_.size() ? columns_[i] : Column{};
          row.push_back(Value(d->values[i], c.type_oid, c.format));
        }
        rows_.push_back(std::move(row));
      }
      return;
    case 'C':
      if (auto c = pg::CommandComplete::Decode(payload); c.ok())
        Line(offset_us, "< " + Printable(c->tag, 200));
      return;
    case 'E':
    case 'N':
      if (auto e = pg::ErrorOrNotice::Decode(payload); e.ok()) {
        std::string text = absl::StrCat(
            "< ", e->Get('S').value_or(type == 'E' ? "ERROR" : "NOTICE"), " ",
            e->Get('C').value_or(""), ": ", Printable(e->Get('M').value_or(""), kMaxTextChars));
        if (auto detail = e->Get('D')) absl::StrAppend(&text, " (", Printable(*detail, 400), ")");
        Line(offset_us, text);
      }
      return;
    case 'A':
      Line(offset_us, "< notification");
      return;
    case 'G':
      Line(offset_us, "< copy from client starts");
      return;
    case 'H':
      Line(offset_us, "< copy to client starts");
      return;
    case 'd':
      Line(offset_us, "< " + Printable(payload, kMaxTextChars));
      return;
    case 's':
      Line(offset_us, "< (portal suspended: more rows on the next Execute)");
      return;
    case 'I':
      Line(offset_us, "< (empty query)");
      return;
    case 'S':
      if (auto p = pg::ParameterStatus::Decode(payload); p.ok()) {
        Line(offset_us, absl::StrCat("< parameter ", p->name, " = ", Printable(p->value, 200)));
      }
      return;
    default:
      return;  // ParseComplete, BindComplete, NoData, ReadyForQuery, ...
  }
}

void TranscriptPrinter::Event(const v1::StoredEvent& e) {
  if (e.type() == audit::SessionStartEvent::kType) {
    const audit::SessionStartEvent start = audit::SessionStartEvent::Read(e.json());
    if (!start.protocol.empty()) protocol_ = start.protocol;
  }
  std::string inflated;
  auto entries = e.recording().empty() ? absl::StatusOr<absl::string_view>(absl::string_view())
                                       : audit::SliceEntries(e.recording(), &inflated);
  if (!entries.ok()) {
    Note(absl::StrCat("the recording is damaged: ", entries.status().message()));
  } else if (!entries->empty()) {
    audit::RecordingReader reader(*entries);
    audit::RecordedEntry entry;
    while (reader.Next(&entry)) {
      if (entry.kind == audit::kRecordedOmitted) {
        Omitted(entry.offset_us, entry.messages, entry.bytes);
      } else {
        Message(entry.kind, entry.offset_us, entry.type, std::string(entry.payload));
      }
    }
    if (!reader.status().ok())
      Note(absl::StrCat("the recording is damaged: ", reader.status().message()));
  }
  if (e.type() == audit::StatementEvent::kType) {
    FlushTable();
    const audit::StatementEvent s = audit::StatementEvent::Read(e.json());
    if (!s.decision.empty()) {  // refused at the agent: blocked, denied, refused
      std::string rule = s.guardrail.guardrail.empty()
                             ? ""
                             : absl::StrCat(" by guardrail ", s.guardrail.guardrail);
      Note(absl::StrCat(absl::AsciiStrToUpper(s.decision), rule, ": ", Quoted(s.text),
                        " did not run: ", Printable(s.reason, kMaxTextChars)));
      return;
    }
    if (s.outcome == audit::StatementEvent::kOutcomeUnknown) {
      Note(absl::StrCat("OUTCOME UNKNOWN: ", Quoted(s.text), ": ", Printable(s.error, 400)));
      return;
    }
    const std::string took =
        absl::StrFormat("%.1f", static_cast<double>(s.duration_us) / 1000) + " ms";
    std::string text = HttpProtocol()
                           ? absl::StrCat(s.text.classification, " ", Quoted(s.text), ": ",
                                          s.command_tags, ", ", s.bytes, " bytes, ", took)
                           : absl::StrCat(s.text.classification, " ", Quoted(s.text), ": ", s.rows,
                                          " rows, ", took);
    if (!s.masked_by.empty())
      absl::StrAppend(&text, ", masked by ", s.masked_by, " (", s.masked_rows, " rows)");
    if (!s.sqlstate.empty()) absl::StrAppend(&text, ", failed with ", s.sqlstate);
    if (HttpProtocol() && !s.error.empty()) absl::StrAppend(&text, ": ", Printable(s.error, 400));
    Note(text);
  } else if (e.type() == audit::ApprovalEvent::kType) {
    FlushTable();
    const audit::ApprovalEvent a = audit::ApprovalEvent::Read(e.json());
    std::string text = absl::StrCat("approval request ", a.approval_id, " for ", Quoted(a.text),
                                    ": ", absl::AsciiStrToUpper(a.decision));
    if (!a.approvers.empty()) absl::StrAppend(&text, " by ", absl::StrJoin(a.approvers, ","));
    if (!a.reason.empty()) absl::StrAppend(&text, " (", Printable(a.reason, 400), ")");
    if (!a.guardrail.empty()) absl::StrAppend(&text, "; guardrail ", a.guardrail);
    Note(text);
  } else if (e.type() == audit::AlertEvent::kType) {
    const audit::AlertEvent a = audit::AlertEvent::Read(e.json());
    Note(absl::StrCat("ALERT by guardrail ", a.guardrail.guardrail, ": ", Quoted(a.text)));
  } else if (e.type() == audit::SessionEndEvent::kType) {
    FlushTable();
    const audit::SessionEndEvent end = audit::SessionEndEvent::Read(e.json());
    Note(absl::StrCat("session ended (", Printable(end.reason, 400), ") after ",
                      end.totals ? end.totals->statements : 0, " statements"));
  }
}

void TranscriptPrinter::Flush() { FlushTable(); }

}  // namespace sluice::cli

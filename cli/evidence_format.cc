#include "cli/evidence_format.h"

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/html.h"

namespace sluice::cli {
namespace {

using Json = nlohmann::ordered_json;

// Rows of one evidence list shown in a readable report; the JSON export has them all.
constexpr size_t kMaxRows = 50;
constexpr size_t kShownEventIds = 10;
constexpr size_t kMaxCell = 300;

std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// One value as table-cell text: strings as they are, lists of scalars joined, anything else as
// compact JSON; cut to kMaxCell bytes.
std::string Cell(const Json& v) {
  std::string out;
  if (v.is_string()) {
    out = v.get<std::string>();
  } else if (v.is_null()) {
    out = "-";
  } else if (v.is_boolean()) {
    out = v.get<bool>() ? "yes" : "no";
  } else if (v.is_array() &&
             std::all_of(v.begin(), v.end(), [](const Json& x) { return x.is_primitive(); })) {
    std::vector<std::string> parts;
    for (const Json& x : v) parts.push_back(Cell(x));
    out = absl::StrJoin(parts, ", ");
  } else if (v.is_array() &&
             std::all_of(v.begin(), v.end(), [](const Json& x) { return x.is_object(); })) {
    // e.g. an approval's votes: "approver=dora (idp), vote=approve; ..."
    std::vector<std::string> items;
    for (const Json& x : v) {
      std::vector<std::string> fields;
      for (auto it = x.begin(); it != x.end(); ++it)
        fields.push_back(absl::StrCat(it.key(), "=", Cell(*it)));
      items.push_back(absl::StrJoin(fields, ", "));
    }
    out = absl::StrJoin(items, "; ");
  } else {
    out = Dump(v);
  }
  if (out.size() > kMaxCell) out = out.substr(0, kMaxCell) + "...";
  return out;
}

// Nested objects become dotted keys: {"a": {"b": 1}} -> ("a.b", "1").
void Flatten(const std::string& prefix, const Json& j,
             std::vector<std::vector<std::string>>* rows) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::string key = prefix.empty() ? it.key() : absl::StrCat(prefix, ".", it.key());
    if (it->is_object() && !it->empty()) {
      Flatten(key, *it, rows);
    } else {
      rows->push_back({key, Cell(*it)});
    }
  }
}

// What the two readable formats are written through: the walk over the report is one, the
// escaping and markup are each format's.
class Writer {
 public:
  virtual ~Writer() = default;
  virtual void Heading(int level, const std::string& text, const std::string& anchor) = 0;
  // A paragraph: `label` in bold, then `text`.
  virtual void Paragraph(const std::string& label, const std::string& text) = 0;
  virtual void Table(const std::vector<std::string>& header,
                     const std::vector<std::vector<std::string>>& rows) = 0;
  virtual void Bullets(const std::vector<std::string>& items) = 0;
  virtual std::string Finish() = 0;
};

class MarkdownWriter : public Writer {
 public:
  void Heading(int level, const std::string& text, const std::string&) override {
    absl::StrAppend(&out_, std::string(static_cast<size_t>(level), '#'), " ", Esc(text), "\n\n");
  }
  void Paragraph(const std::string& label, const std::string& text) override {
    absl::StrAppend(&out_, label.empty() ? "" : absl::StrCat("**", Esc(label), "** "), Esc(text),
                    "\n\n");
  }
  void Table(const std::vector<std::string>& header,
             const std::vector<std::vector<std::string>>& rows) override {
    std::vector<std::string> cells;
    for (const auto& h : header) cells.push_back(Esc(h));
    absl::StrAppend(&out_, "| ", absl::StrJoin(cells, " | "), " |\n|");
    for (size_t i = 0; i < header.size(); ++i) out_ += " --- |";
    out_ += "\n";
    for (const auto& row : rows) {
      cells.clear();
      for (const auto& c : row) cells.push_back(Esc(c));
      absl::StrAppend(&out_, "| ", absl::StrJoin(cells, " | "), " |\n");
    }
    out_ += "\n";
  }
  void Bullets(const std::vector<std::string>& items) override {
    for (const auto& i : items) absl::StrAppend(&out_, "- ", Esc(i), "\n");
    out_ += "\n";
  }
  std::string Finish() override { return std::move(out_); }

 private:
  // Markdown punctuation (and so any inline HTML) is escaped; line breaks would end a table row.
  // An underscore inside a word cannot start or end emphasis, so names like sessions_refused stay
  // as they are.
  static std::string Esc(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      const char c = s[i];
      switch (c) {
        case '_':
          if (i > 0 && i + 1 < s.size() && absl::ascii_isalnum(s[i - 1]) &&
              absl::ascii_isalnum(s[i + 1])) {
            out += c;
            break;
          }
          [[fallthrough]];
        case '\\':
        case '`':
        case '*':
        case '[':
        case ']':
        case '<':
        case '>':
        case '|':
        case '#':
        case '~':
        case '&':
          out += '\\';
          out += c;
          break;
        case '\n':
        case '\r':
        case '\t':
          out += ' ';
          break;
        default:
          out += c;
      }
    }
    return out;
  }
  std::string out_;
};

class HtmlWriter : public Writer {
 public:
  explicit HtmlWriter(const std::string& title) {
    absl::StrAppend(
        &out_, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>",
        HtmlEscape(title),
        "</title>\n<style>\nbody{font-family:sans-serif;max-width:80em;margin:2em auto;padding:0 "
        "1em}\n"
        "table{border-collapse:collapse;margin:0.5em 0 1em}\n"
        "th,td{border:1px solid #ccc;padding:0.2em 0.5em;text-align:left;vertical-align:top}\n"
        "th{background:#f3f3f3}\n</style>\n</head>\n<body>\n");
  }
  void Heading(int level, const std::string& text, const std::string& anchor) override {
    absl::StrAppend(&out_, "<h", level,
                    anchor.empty() ? "" : absl::StrCat(" id=\"", HtmlEscape(anchor), "\""), ">",
                    HtmlEscape(text), "</h", level, ">\n");
  }
  void Paragraph(const std::string& label, const std::string& text) override {
    absl::StrAppend(&out_, "<p>",
                    label.empty() ? "" : absl::StrCat("<strong>", HtmlEscape(label), "</strong> "),
                    HtmlEscape(text), "</p>\n");
  }
  void Table(const std::vector<std::string>& header,
             const std::vector<std::vector<std::string>>& rows) override {
    out_ += "<table>\n<tr>";
    for (const auto& h : header) absl::StrAppend(&out_, "<th>", HtmlEscape(h), "</th>");
    out_ += "</tr>\n";
    for (const auto& row : rows) {
      out_ += "<tr>";
      for (const auto& c : row) absl::StrAppend(&out_, "<td>", HtmlEscape(c), "</td>");
      out_ += "</tr>\n";
    }
    out_ += "</table>\n";
  }
  void Bullets(const std::vector<std::string>& items) override {
    out_ += "<ul>\n";
    for (const auto& i : items) absl::StrAppend(&out_, "<li>", HtmlEscape(i), "</li>\n");
    out_ += "</ul>\n";
  }
  std::string Finish() override {
    out_ += "</body>\n</html>\n";
    return std::move(out_);
  }

 private:
  std::string out_;
};

std::string Text(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return "";
  return it->is_string() ? it->get<std::string>() : Cell(*it);
}

// One evidence entry of a control.
void Evidence(Writer& w, const std::string& name, const Json& value, const Json& evidence) {
  if (absl::EndsWith(name, "_left_out")) return;  // shown with its list
  if (value.is_array() && !value.empty() && value.front().is_object()) {
    std::vector<std::string> header;
    for (const Json& item : value) {
      for (auto it = item.begin(); it != item.end(); ++it) {
        if (std::find(header.begin(), header.end(), it.key()) == header.end())
          header.push_back(it.key());
      }
    }
    std::vector<std::vector<std::string>> rows;
    for (size_t i = 0; i < value.size() && i < kMaxRows; ++i) {
      std::vector<std::string> row;
      for (const auto& h : header) row.push_back(value[i].contains(h) ? Cell(value[i][h]) : "");
      rows.push_back(std::move(row));
    }
    size_t left_out = 0;  // beyond the report's own cap
    auto left = evidence.find(name + "_left_out");
    if (left != evidence.end() && left->is_number_unsigned()) left_out = left->get<size_t>();
    const size_t total = value.size() + left_out;
    w.Paragraph(name, absl::StrCat("(", total, ")"));
    w.Table(header, rows);
    if (total > rows.size()) {
      w.Paragraph(
          "", absl::StrCat(total - rows.size(), " more not shown here",
                           left_out == 0 ? " (they are in the JSON export)"
                                         : absl::StrCat("; ", left_out,
                                                        " of them are counted but not listed in "
                                                        "the export either")));
    }
    return;
  }
  if (value.is_array()) {
    w.Paragraph(name, value.empty() ? "none" : Cell(value));
    return;
  }
  if (value.is_object() && !value.empty() &&
      std::all_of(value.begin(), value.end(), [](const Json& x) { return x.is_object(); })) {
    for (auto it = value.begin(); it != value.end();
         ++it) {  // e.g. one sample record per event type
      std::vector<std::vector<std::string>> rows;
      Flatten("", *it, &rows);
      w.Paragraph(absl::StrCat(name, ": ", it.key()), "");
      w.Table({"field", "value"}, rows);
    }
    return;
  }
  if (value.is_object()) {
    std::vector<std::vector<std::string>> rows;
    Flatten("", value, &rows);
    w.Paragraph(name, rows.empty() ? "none" : "");
    if (!rows.empty()) w.Table({"key", "value"}, rows);
    return;
  }
  std::string text = Cell(value);
  w.Paragraph(name, text.empty() ? "none" : text);
}

std::string Readable(const Json& report, Writer& w) {
  const Json& window = report["window"];
  const Json& verify = report["verify"];
  w.Heading(1, Text(report, "report"), "");
  w.Paragraph("Window:", absl::StrCat(Text(window, "from"), " to ", Text(window, "to"),
                                      " (UTC; from inclusive, to exclusive)"));
  w.Paragraph("Generated:",
              absl::StrCat(Text(report, "generated"), ", from ", Text(report, "source")));
  if (verify.value("ok", false)) {
    w.Paragraph(
        "Audit chain: VERIFIED.",
        absl::StrCat(
            Text(verify, "records"), " record(s) of ", Text(verify, "agents"),
            " agent(s); every checksum and chain link intact; ",
            verify.contains("trails_complete")  // (a control plane before completeness: absent)
                ? absl::StrCat(Text(verify, "trails_complete"),
                               " trail(s) complete from signed genesis to signed head; ")
                : std::string(),
            Text(verify, "checkpoints"), " signed checkpoint(s) hold."));
  } else {
    w.Paragraph("Audit chain: VERIFICATION FAILED.",
                absl::StrCat(Text(verify, "problems"),
                             " problem(s). First: ", Text(verify, "first_problem")));
  }
  w.Heading(2, "Controls", "summary");
  std::vector<std::vector<std::string>> rows;
  for (const Json& c : report["controls"]) {
    rows.push_back({Text(c, "id"), Text(c, "title"), Text(c, "summary"),
                    absl::StrCat(c["not_recorded"].size())});
  }
  w.Table({"control", "title", "summary", "not recorded"}, rows);
  for (const Json& c : report["controls"]) {
    w.Heading(2, absl::StrCat(Text(c, "id"), " ", Text(c, "title")), Text(c, "id"));
    w.Paragraph("What the gateway does:", Text(c, "what_the_gateway_does"));
    w.Paragraph("Summary:", Text(c, "summary"));
    std::vector<std::vector<std::string>> counts;
    Flatten("", c["counts"], &counts);
    if (!counts.empty()) {
      w.Heading(3, "Counts", "");
      w.Table({"count", "value"}, counts);
    }
    const Json& evidence = c["evidence"];
    if (!evidence.empty()) {
      w.Heading(3, "Evidence", "");
      for (auto it = evidence.begin(); it != evidence.end(); ++it)
        Evidence(w, it.key(), *it, evidence);
    }
    if (!c["not_recorded"].empty()) {
      w.Heading(3, "Not recorded", "");
      std::vector<std::string> items;
      for (const Json& n : c["not_recorded"])
        items.push_back(absl::StrCat(Text(n, "what"), ": ", Text(n, "why")));
      w.Bullets(items);
    }
    const Json& ids = c["event_ids"];
    size_t truncated = c.value("event_ids_truncated", size_t{0});
    std::vector<std::string> shown;
    for (size_t i = 0; i < ids.size() && i < kShownEventIds; ++i) shown.push_back(Cell(ids[i]));
    w.Paragraph("Events:",
                ids.empty()
                    ? "none"
                    : absl::StrCat(ids.size() + truncated, " (", absl::StrJoin(shown, ", "),
                                   ids.size() + truncated > shown.size() ? ", ..." : "", ")"));
  }
  return w.Finish();
}

}  // namespace

absl::StatusOr<std::string> RenderEvidence(const std::string& report_json,
                                           const std::string& format) {
  if (format != "json" && format != "markdown" && format != "html") {
    return absl::InvalidArgumentError(
        absl::StrCat("--format: json, markdown or html, not '", format, "'"));
  }
  Json report = Json::parse(report_json, nullptr, false);
  if (report.is_discarded() || !report.is_object() || !report.contains("controls") ||
      !report["controls"].is_array() || !report.contains("verify") ||
      !report["verify"].is_object() || !report.contains("window") ||
      !report["window"].is_object()) {
    return absl::InvalidArgumentError(
        "the control plane's evidence report is not in the expected form");
  }
  for (const Json& c : report["controls"]) {
    if (!c.is_object() || !c.contains("counts") || !c["counts"].is_object() ||
        !c.contains("evidence") || !c["evidence"].is_object() || !c.contains("not_recorded") ||
        !c["not_recorded"].is_array() || !c.contains("event_ids") || !c["event_ids"].is_array()) {
      return absl::InvalidArgumentError(
          "the control plane's evidence report has a control not in the expected form");
    }
  }
  if (format == "json")
    return report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::unique_ptr<Writer> w;
  if (format == "markdown") {
    w = std::make_unique<MarkdownWriter>();
  } else {
    w = std::make_unique<HtmlWriter>(Text(report, "report"));
  }
  return Readable(report, *w);
}

}  // namespace sluice::cli

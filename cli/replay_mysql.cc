// The MySQL half of the transcript (replay.h): the agent records each packet with a type it
// knows from where the packet fell in the exchange (agent/mysql/recorder.h), since MySQL packets
// do not say what they are: the client's commands by their command byte, and to the client
// OK ('O'), ERR ('E'), EOF ('F'), a result's header ('N'), its columns ('C'), text rows ('D'),
// binary rows ('B'), a prepared statement's answer ('P') and other text ('S').
#include "absl/strings/str_cat.h"
#include "cli/replay.h"
#include "common/audit/recording.h"
#include "common/wire/mysql/packets.h"
#include "common/wire/mysql/rows.h"

namespace sluice::cli {
namespace my = wire::mysql;
namespace {

constexpr size_t kMaxCellChars = 48;
constexpr size_t kMaxTextChars = 2000;

// What the client sent: its command and the command's text.
std::string CommandLine(uint8_t command, absl::string_view rest) {
  switch (static_cast<my::Command>(command)) {
    case my::Command::kQuery:
      return "> " + Printable(rest, kMaxTextChars);
    case my::Command::kStmtPrepare:
      return "> prepare: " + Printable(rest, kMaxTextChars);
    case my::Command::kStmtExecute: {
      my::Reader r(rest);
      const uint32_t id = r.Int4();
      return r.ok() ? absl::StrCat("> execute statement ", id) : "> execute";
    }
    case my::Command::kInitDb:
      return "> use " + Printable(rest, 200);
    case my::Command::kQuit:
      return "> disconnect";
    default:
      return "> " + my::CommandName(command);
  }
}

}  // namespace

void TranscriptPrinter::MysqlMessage(char kind, uint64_t offset_us, char type,
                                     const std::string& payload) {
  if (kind == audit::kRecordedFromClient) {
    FlushTable();
    const uint8_t command = static_cast<uint8_t>(type);
    if (command == static_cast<uint8_t>(my::Command::kStmtClose) ||
        command == static_cast<uint8_t>(my::Command::kPing)) {
      return;  // protocol steps, not content
    }
    Line(offset_us, CommandLine(command, payload));
    return;
  }
  switch (type) {
    case 'N':  // a result set starts: its columns follow
      FlushTable();
      columns_.clear();
      table_open_ = true;
      table_offset_ = offset_us;
      return;
    case 'C':
      if (table_open_ && rows_.empty()) {
        if (auto c = my::ColumnDefinition::Decode(payload); c.ok()) {
          columns_.push_back(Column{Printable(c->name, kMaxCellChars), c->type, 0,
                                    (c->flags & my::kUnsignedFlag) != 0});
        }
      }
      return;
    case 'D':
    case 'B': {
      std::vector<my::RowValue> values;
      std::vector<uint8_t> types;
      for (const Column& c : columns_) types.push_back(static_cast<uint8_t>(c.type_oid));
      const absl::Status split = type == 'D' ? my::SplitTextRow(payload, columns_.size(), &values)
                                             : my::SplitBinaryRow(payload, types, &values);
      if (!split.ok()) {
        Note(absl::StrCat("a recorded row cannot be read: ", split.message()));
        return;
      }
      std::vector<std::string> row;
      for (size_t i = 0; i < values.size(); ++i) {
        const my::RowValue& v = values[i];
        if (v.null) {
          row.push_back("NULL");
        } else if (type == 'B' && my::BinaryTypeOf(types[i]).layout != my::BinaryLayout::kLenenc) {
          row.push_back(my::BinaryValueText(v.data, types[i], columns_[i].is_unsigned));
        } else {
          row.push_back(Printable(v.data, kMaxCellChars));
        }
      }
      rows_.push_back(std::move(row));
      return;
    }
    case 'F':
      return;  // the end of a column list or of rows: the table prints at the statement's event
    case 'O':
      FlushTable();
      if (auto ok = my::OkPacket::Decode(payload); ok.ok()) {
        Line(offset_us, absl::StrCat("< OK, ", ok->affected_rows, " rows affected"));
      }
      return;
    case 'E':
      FlushTable();
      if (auto e = my::ErrPacket::Decode(payload); e.ok()) {
        Line(offset_us, absl::StrCat("< ERROR ", e->code, " (", e->sql_state,
                                     "): ", Printable(e->message, kMaxTextChars)));
      }
      return;
    case 'P': {
      my::Reader r(absl::string_view(payload).substr(1));
      const uint32_t id = r.Int4();
      if (r.ok()) Line(offset_us, absl::StrCat("< prepared statement ", id));
      return;
    }
    default:
      FlushTable();
      Line(offset_us, "< " + Printable(payload, kMaxTextChars));
      return;
  }
}

}  // namespace sluice::cli

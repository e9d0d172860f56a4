#include "common/audit/records.h"

#include <google/protobuf/io/coded_stream.h>
#include <isa-l/crc.h>

#include <cstring>

#include "absl/base/internal/endian.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"

namespace sluice::audit {
namespace {

// The key and length of AuditEvent.recording as serialized before its bytes.
static_assert(v1::AuditEvent::kRecordingFieldNumber < 16, "the recording field's key is one byte");
std::string RecordingFieldHead(size_t size) {
  uint8_t head[1 + 10];
  head[0] = static_cast<uint8_t>((v1::AuditEvent::kRecordingFieldNumber << 3) | 2);
  uint8_t* end = google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(size, head + 1);
  return std::string(reinterpret_cast<const char*>(head), static_cast<size_t>(end - head));
}

}  // namespace

// The CRC-32 of gzip and zlib (reflected, polynomial 0x04C11DB7), computed by ISA-L with
// carry-less multiplication: about 7 times as fast as zlib's crc32 on a 700-byte event, and the
// same value. Records are capped far below its 64-bit length.
uint32_t Crc32(absl::string_view data) {
  return crc32_gzip_refl(0, reinterpret_cast<const unsigned char*>(data.data()), data.size());
}

absl::StatusOr<absl::string_view> StripRecording(absl::string_view payload, absl::string_view recording) {
  std::string head = RecordingFieldHead(recording.size());
  const size_t field = head.size() + recording.size();
  if (payload.size() < field || payload.substr(payload.size() - recording.size()) != recording ||
      payload.substr(payload.size() - field, head.size()) != head) {
    return absl::InvalidArgumentError("an audit event's recording is not its last field");
  }
  return payload.substr(0, payload.size() - field);
}

std::string JoinRecording(absl::string_view stripped, absl::string_view recording) {
  return absl::StrCat(stripped, RecordingFieldHead(recording.size()), recording);
}

char* AppendRecordSpace(std::string* out, size_t payload_size, size_t* offset) {
  *offset = out->size();
  out->resize(*offset + kRecordHeaderBytes + payload_size);
  return out->data() + *offset + kRecordHeaderBytes;
}

void SealRecord(std::string* out, size_t offset) {
  char* header = out->data() + offset;
  size_t size = out->size() - offset - kRecordHeaderBytes;
  absl::little_endian::Store32(header, static_cast<uint32_t>(size));
  absl::little_endian::Store32(header + 4, Crc32(absl::string_view(header + kRecordHeaderBytes, size)));
}

void AppendRecord(std::string* out, absl::string_view payload) {
  size_t offset = 0;
  char* p = AppendRecordSpace(out, payload.size(), &offset);
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
  SealRecord(out, offset);
}

std::string ChainHash(absl::string_view payload) { return Sha256(payload); }

std::string CheckpointMessage(uint64_t sequence, absl::string_view hash) {
  return absl::StrCat("sluice-audit-checkpoint v1 ", sequence, " ", HexEncode(hash));
}

absl::string_view RecordPayload(absl::string_view records, size_t offset) {
  if (offset + kRecordHeaderBytes > records.size()) return {};
  uint32_t size = absl::little_endian::Load32(records.data() + offset);
  return records.substr(offset + kRecordHeaderBytes, size);
}

absl::StatusOr<absl::string_view> RecordReader::Next() {
  size_t left = data_.size() - pos_;
  if (left < kRecordHeaderBytes) {
    return absl::DataLossError(absl::StrCat("audit record at offset ", pos_, ": truncated header (",
                                            left, " bytes)"));
  }
  const char* header = data_.data() + pos_;
  uint32_t size = absl::little_endian::Load32(header);
  uint32_t crc = absl::little_endian::Load32(header + 4);
  if (size > kMaxRecordBytes) {
    return absl::DataLossError(absl::StrCat("audit record at offset ", pos_, ": length ", size,
                                            " is over the limit of ", kMaxRecordBytes));
  }
  if (left - kRecordHeaderBytes < size) {
    return absl::DataLossError(absl::StrCat("audit record at offset ", pos_, ": truncated payload (",
                                            left - kRecordHeaderBytes, " of ", size, " bytes)"));
  }
  absl::string_view payload(header + kRecordHeaderBytes, size);
  if (Crc32(payload) != crc) {
    return absl::DataLossError(absl::StrCat("audit record at offset ", pos_, ": checksum mismatch"));
  }
  pos_ += kRecordHeaderBytes + size;
  return payload;
}

absl::Status DecodeEventsInto(absl::string_view records, size_t max_events, std::vector<v1::AuditEvent>* out,
                              std::vector<size_t>* offsets) {
  if (offsets != nullptr) offsets->clear();
  size_t n = 0;  // events decoded; out's elements from n on are left over from its last use
  RecordReader reader(records);
  while (!reader.done()) {
    size_t at = reader.offset();
    auto payload = reader.Next();
    if (!payload.ok()) return payload.status();
    if (n == max_events) {
      return absl::InvalidArgumentError(absl::StrCat("audit batch holds more than ", max_events, " events"));
    }
    if (offsets != nullptr) offsets->push_back(at);
    v1::AuditEvent& e = n < out->size() ? (*out)[n] : out->emplace_back();
    ++n;
    // Parsing clears the event first; its strings keep their capacity.
    if (!e.ParseFromArray(payload->data(), static_cast<int>(payload->size()))) {
      return absl::DataLossError(absl::StrCat("audit record at offset ", at, ": not an AuditEvent"));
    }
    if (e.type().empty() || e.type().size() > 64 || e.session_id().size() > 128) {
      return absl::InvalidArgumentError(absl::StrCat("audit record at offset ", at,
                                                     ": type or session id missing or too long"));
    }
    if (n > 1 && e.sequence() <= (*out)[n - 2].sequence()) {
      return absl::InvalidArgumentError(absl::StrCat("audit record at offset ", at, ": sequence ",
                                                     e.sequence(), " does not follow ",
                                                     (*out)[n - 2].sequence()));
    }
  }
  out->resize(n);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::AuditEvent>> DecodeEvents(absl::string_view records, size_t max_events,
                                                         std::vector<size_t>* offsets) {
  std::vector<v1::AuditEvent> out;
  absl::Status st = DecodeEventsInto(records, max_events, &out, offsets);
  if (!st.ok()) return st;
  return out;
}

}  // namespace sluice::audit

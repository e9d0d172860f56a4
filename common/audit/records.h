// Framing of audit records: how the agent buffers (and, later, spools to disk) its audit events
// and how they travel to the control plane in AuditBatch.records. Each record is
//
//   uint32 little-endian  payload length (at most kMaxRecordBytes)
//   uint32 little-endian  CRC-32 (zlib polynomial) of the payload
//   payload               a serialized sluice.v1.AuditEvent
//
// back to back, with nothing in between. The checksum catches a torn or corrupted record; it is
// not tamper evidence (that is the hash chain over the events themselves).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sluice/v1/agent.pb.h"

namespace sluice::audit {

inline constexpr size_t kRecordHeaderBytes = 8;
inline constexpr size_t kMaxRecordBytes = 1 << 20;
// The framed records an agent sends in one AuditBatch, live (agent/audit/event_sink.h) or read
// back from its spool (agent/audit/spool.h): about 1 MiB (a chunk may end one record past it).
inline constexpr size_t kChunkBytes = 1 << 20;

// Appends one framed record holding `payload` (at most kMaxRecordBytes) to `out`.
void AppendRecord(std::string* out, absl::string_view payload);

// Reserves room for a record of `payload_size` bytes at the end of `out` and returns where the
// payload goes; call SealRecord(out, offset) after writing it. For encoders that serialize in
// place instead of through a temporary string.
char* AppendRecordSpace(std::string* out, size_t payload_size, size_t* offset);
void SealRecord(std::string* out, size_t offset);

// The hash chain over an agent's records: each event's prev_hash is ChainHash of the previous
// record's payload (SHA-256, raw 32 bytes). The agent, its spool and the control plane all use
// this one definition.
std::string ChainHash(absl::string_view payload);
// The chain filled in after the records were written (so that the agent's data path does not
// hash: see docs/postgres.md, "The chain hash belongs on the spool thread"). Each record of
// `records` that has a prev_hash (32 bytes, a placeholder or an earlier value) gets `*head` written
// into it and its CRC sealed again; a record without one starts the chain. `*head` is the chain
// head before the first record and, on return, after the last. Errors name the record's offset:
// DataLoss when its framing or CRC is wrong (as RecordReader), InvalidArgument when its event
// cannot be read or has a prev_hash while there is no head yet.
absl::Status ChainRecords(std::string* records, std::string* head);
// What an agent's checkpoint signature covers: the record `sequence` has chain hash `hash`.
// "sluice-audit-checkpoint v1 <sequence> <hex hash>".
std::string CheckpointMessage(uint64_t sequence, absl::string_view hash);

// Recordings travel in the event (AuditEvent.recording, the last field serialized) and are kept
// apart from it at the control plane. The event without them is the event's payload with the
// field's bytes cut from the end; the chain hash is always of the whole payload, so the control
// plane puts the recording back (JoinRecording) to check it.
// The stored form of `payload` (an event whose recording is `recording`, non-empty): the payload
// without the recording field. InvalidArgument when the payload does not end with that field.
absl::StatusOr<absl::string_view> StripRecording(absl::string_view payload,
                                                 absl::string_view recording);
// The whole payload again: `stripped` followed by the recording field holding `recording`.
std::string JoinRecording(absl::string_view stripped, absl::string_view recording);
// A 32-bit CRC (zlib's polynomial), as records use.
uint32_t Crc32(absl::string_view data);

// The payload of the record that starts at `offset` of `records` (a record DecodeEvents checked).
absl::string_view RecordPayload(absl::string_view records, size_t offset);

// Reads records from a buffer, front to back.
class RecordReader {
 public:
  explicit RecordReader(absl::string_view data) : data_(data) {}
  // The next record's payload (call while !done()). Errors name the record's offset: a short
  // header or payload, a length over the cap, or a checksum mismatch.
  absl::StatusOr<absl::string_view> Next();
  bool done() const { return pos_ == data_.size(); }
  size_t offset() const { return pos_; }

 private:
  absl::string_view data_;
  size_t pos_ = 0;
};

// Decodes a batch of event records (AuditBatch.records) whole: every checksum, every payload a
// valid AuditEvent with its fields within bounds, sequences strictly increasing, at most
// `max_events`. The first problem is the error; nothing is returned partially. When `offsets` is
// given it receives where each event's record starts in `records`.
absl::StatusOr<std::vector<v1::AuditEvent>> DecodeEvents(absl::string_view records,
                                                         size_t max_events,
                                                         std::vector<size_t>* offsets = nullptr);
// The same, into `out`, whose elements are reused (parsing keeps their strings' capacity): the
// control plane decodes batch after batch into recycled vectors and then allocates little (16%
// more events/s in bench/audit_pipeline's ingest). On an error `out` holds unspecified events.
absl::Status DecodeEventsInto(absl::string_view records, size_t max_events,
                              std::vector<v1::AuditEvent>* out,
                              std::vector<size_t>* offsets = nullptr);

}  // namespace sluice::audit

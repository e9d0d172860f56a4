// The MySQL session's class (session.h has the contract), split over session.cc (greeting,
// token, upstream login, pins) and session_commands.cc (the command loop and the relay of
// answers). Internal to agent/mysql.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "agent/masking/policy.h"
#include "agent/mysql/packet_stream.h"
#include "agent/mysql/recorder.h"
#include "agent/mysql/result_masking.h"
#include "agent/mysql/session.h"
#include "agent/mysql/sql_analysis.h"
#include "agent/mysql/upstream.h"
#include "agent/session/admission.h"
#include "agent/session/approval_hold.h"
#include "agent/session/gate.h"
#include "agent/session/guardrails.h"
#include "agent/session/session_audit.h"
#include "common/audit/events.h"

namespace sluice::agent::mysql::session_internal {

using audit::RefusalKind;

// Statement analyses, cached by shape per worker thread (a session runs on one worker). A
// reference is valid until the next Get on the thread: look it up again after a wait.
StatementCache& Statements();

// Statements that read the previous statement's warnings rather than replace them (SHOW
// WARNINGS / ERRORS / COUNT(*) WARNINGS, GET DIAGNOSTICS).
bool KeepsWarnings(const StatementInfo& info);

// How one command's answer is masked (session_masking.cc). Off when no MaskingRule applies.
struct ResultMasking {
  bool on = false;
  bool binary = false;  // rows in the binary protocol (COM_STMT_EXECUTE)
  // The statement names tables with masked columns (`masked_tables`): the server's error text
  // could quote their values, and is withheld.
  bool withhold_messages = false;
  std::string masked_tables;
  // SHOW WARNINGS / SHOW ERRORS after such a statement: every text column is masked whole.
  bool redact_all = false;
  std::vector<session::Relation> relations;
  std::vector<std::string> defined_names;
  // The result set being relayed.
  std::vector<wire::mysql::ColumnDefinition> columns;
  ResultPlan plan;
  // The column definitions as the server sent them, kept when `keep_columns` (a cursor's result:
  // its rows are masked at each COM_STMT_FETCH under the policy then in force).
  bool keep_columns = false;
  std::vector<std::string> column_payloads;
  std::string masked;  // a masked row, reused
  // For the event.
  std::vector<std::string> rules;
  int64_t masked_rows = 0;
};

// What the relay of one command's answer saw, for its event.
struct Answer {
  int64_t rows = 0;
  int64_t bytes = 0;
  uint64_t affected_rows = 0;
  int results = 0;
  std::string error;      // the server's ERR message, if it ended with one
  std::string sql_state;  // and its SQLSTATE
  uint16_t error_code = 0;
  std::string masked_by;  // masking rules that applied, comma-separated
  int64_t masked_rows = 0;
  bool cursor_opened = false;  // COM_STMT_EXECUTE opened a cursor (its rows come by FETCH)
  bool cursor_closed = false;  // COM_STMT_FETCH sent the cursor's last row
};

class Session {
 public:
  Session(asio::ip::tcp::socket socket, SessionDeps deps);
  asio::awaitable<void> Run();

 private:
  // ---- Login (session.cc) ----
  asio::awaitable<absl::Status> Serve();
  asio::awaitable<absl::Status> LoginDeadline();
  // The greeting, TLS, and the client's HandshakeResponse.
  asio::awaitable<absl::Status> Greet(wire::mysql::HandshakeResponse41* response);
  // The token (caching_sha2_password full authentication), then admission.
  asio::awaitable<absl::Status> Admit(const wire::mysql::HandshakeResponse41& response);
  asio::awaitable<absl::StatusOr<std::string>> ReadToken(
      const wire::mysql::HandshakeResponse41& response);
  // A login without a database whose user names no Connection: the mariadb / mysql CLI's
  // cancel connection (Ctrl-C sends `KILL QUERY <id>` from it). The Connection that the token's
  // caller has its open sessions on when they are all on one; nullopt otherwise (the login is
  // refused as naming an unknown connection).
  std::optional<std::string> CancelConnection(absl::string_view token) const;
  asio::awaitable<absl::Status> LoginUpstream(const wire::mysql::HandshakeResponse41& response);
  // The session's pins on an idle upstream: read-only for a read grant (checked), and the SQL
  // mode the agent lexes statements in. Again after COM_RESET_CONNECTION.
  asio::awaitable<absl::Status> Pin();
  asio::awaitable<absl::Status> Welcome(const wire::mysql::HandshakeResponse41& response);
  // A refused login: its ERR packet and event; the session ends.
  asio::awaitable<absl::Status> RefuseLogin(session::Refuse refusal);
  asio::awaitable<absl::Status> FailLogin(RefusalKind kind, std::string message);
  audit::Who Who() const;

  // ---- Commands (session_commands.cc) ----
  asio::awaitable<absl::Status> Commands();
  asio::awaitable<absl::Status> Query(const OwnedPacket& command);
  // A KILL the client sends (its statement allowed): mapped to the upstream thread of one of the
  // caller's own sessions on this connection, or refused.
  asio::awaitable<absl::Status> Kill(const OwnedPacket& command, absl::Time started);
  asio::awaitable<absl::Status> InitDb(const OwnedPacket& command);
  asio::awaitable<absl::Status> ResetConnection(const OwnedPacket& command);
  // Prepared statements (session_prepared.cc).
  asio::awaitable<absl::Status> Prepare(const OwnedPacket& command);
  // COM_STMT_EXECUTE, and MariaDB's COM_STMT_BULK_EXECUTE (one prepared statement over many
  // rows of parameters, decided as one execution of it).
  asio::awaitable<absl::Status> Execute(const OwnedPacket& command);
  size_t OpenCursors() const;
  // COM_STMT_FETCH: more rows of a cursor that COM_STMT_EXECUTE opened, masked as its result.
  asio::awaitable<absl::Status> Fetch(const OwnedPacket& command);
  // COM_STMT_SEND_LONG_DATA, COM_STMT_RESET, COM_STMT_CLOSE.
  asio::awaitable<absl::Status> StatementCommand(const OwnedPacket& command);
  // Forwards a command that passed and relays its answer (`kind` says how it ends).
  enum class Reply { kResultSets, kOnePacket, kFieldList };
  // `masking` (null: none) says how result sets are masked.
  asio::awaitable<absl::StatusOr<Answer>> Forward(const OwnedPacket& command, Reply kind,
                                                  ResultMasking* masking = nullptr);
  asio::awaitable<absl::Status> RelayResultSets(Answer* answer, ResultMasking* masking);
  // The upstream's next whole packet in `*r` (a view into the stream's buffer until it is
  // consumed); what waits for the client is written first when the server has sent nothing more.
  asio::awaitable<absl::Status> NextUpstreamPacket(wire::mysql::DecodeResult* r);
  // The rows a COM_STMT_FETCH gets, up to the EOF (or OK) that ends them, or the server's ERR.
  asio::awaitable<absl::Status> RelayFetchedRows(Answer* answer, ResultMasking* masking);
  // One result row, masked when the answer is (an error when it cannot be).
  absl::Status RelayRow(const wire::mysql::DecodeResult& r, ResultMasking* masking, Answer* answer);
  // The server's ERR that ends an answer: its text masked or withheld when the answer is.
  void RelayError(const wire::mysql::DecodeResult& r, const ResultMasking* masking, Answer* answer);
  asio::awaitable<absl::Status> RelayUntilEnd(Answer* answer);
  // ---- Masking (session_masking.cc) ----
  // How the answer of `info`'s statement is masked (off when no rule applies).
  ResultMasking MaskingFor(absl::string_view sql, const StatementInfo& info, bool binary);
  // Why the statement's results could not be kept masked (empty: they can): values it would
  // carry past masking (user variables, SQL-level PREPARE, diagnostics that quote them).
  std::string Unmaskable(absl::string_view sql, const StatementInfo& info) const;
  // The tables with masked columns whose values the statement can carry (it names one of their
  // masked columns, or `*`), comma-separated; empty when none.
  std::string MaskedMentions(absl::string_view sql, const StatementInfo& info) const;
  // A column definition of a masked answer, taken in; after the last one the result's plan.
  absl::Status MaskingColumn(absl::string_view payload, bool last, ResultMasking* m);
  // A row of a masked answer: relayed masked (an error when it cannot be: never unmasked).
  absl::Status RelayMaskedRow(const wire::mysql::DecodeResult& r, ResultMasking* m);
  // The server's ERR of a masked answer: its text withheld or searched by the detectors.
  void RelayMaskedError(const wire::mysql::DecodeResult& r, const ResultMasking& m);
  // After a masked answer: what the event says, and whether warnings may quote masked values.
  void MaskingDone(const ResultMasking& m, bool show_warnings, Answer* answer);
  // Relays one packet of the server's, or `replacement` as its payload; sequence ids after a
  // packet that changed how many packets it takes are shifted along.
  void RelayPacket(const wire::mysql::DecodeResult& r, absl::string_view replacement);

  // An ERR answer of the agent's own to the command (sequence 1); the session goes on.
  asio::awaitable<absl::Status> RefuseCommand(const session::Refuse& refusal);
  // The statement's decision, recorded when refused or alerted on.
  // `protocol`: how it came (text, prepare, binary), for its event.
  session::Decision Decide(absl::string_view sql, const StatementInfo& info, const char* protocol);
  // A held statement's decision (see agent/session/approval_hold.h), with its approval event;
  // `protocol` as for Decide.
  asio::awaitable<session::Decision> HoldForApproval(absl::string_view sql,
                                                     const StatementInfo& info,
                                                     const session::GuardrailDecision& d,
                                                     const char* protocol,
                                                     std::vector<std::string> parameters = {});
  void EmitAnswered(absl::string_view sql, const StatementInfo* info, const Answer& answer,
                    absl::Time started, const char* protocol);
  void SetEventText(audit::StatementText* t, absl::string_view sql, const StatementInfo* info,
                    const char* protocol);
  // Rules follow policy changes (a long session gets new guardrails too).
  void FollowPolicy();
  // Relayed bytes to the client, recorded packet by packet by the relay.
  asio::awaitable<absl::Status> Flush();
  // Moves the upstream's next `wire_size` bytes (whole packets, as the server framed them) to
  // what goes to the client.
  void PassThrough(size_t wire_size) {
    const absl::string_view bytes = upstream_.stream->buffer().data().substr(0, wire_size);
    out_.append(bytes.data(), bytes.size());
    upstream_.stream->Consume(wire_size);
  }
  asio::awaitable<absl::Status> EndUnaudited();
  bool deprecate_eof() const { return (capabilities_ & wire::mysql::kClientDeprecateEof) != 0; }

  SessionDeps deps_;
  PacketStream client_;
  std::string peer_;
  absl::Time started_;
  SessionRecorder recorder_;
  session::SessionAudit audit_;
  session::ApprovalHold hold_;
  session::Admission admission_;
  session::StatementGate gate_;
  session::GuardrailSet guardrails_;
  masking::MaskingPolicy masking_;
  uint64_t policy_generation_ = ~uint64_t{0};
  std::shared_ptr<const AgentPolicy>
      guardrails_policy_;  // what guardrails_ and masking_ point into

  bool logged_in_ = false;
  uint32_t connection_id_;     // the agent's id of this session, in its greeting
  uint8_t sequence_ = 0;       // the next packet's sequence id during the login
  std::string scramble_;       // the agent's, in its greeting
  uint32_t capabilities_ = 0;  // negotiated with the client
  std::string user_;           // as the client gave it
  std::string connection_name_;
  jwt::Identity identity_;
  Grant grant_;
  SessionTicket ticket_;
  session::Credentials credentials_;
  UpstreamSession upstream_;
  std::string upstream_database_;  // the Connection's database (USE of the Connection's name maps)
  // The session's database now (COM_INIT_DB, USE): where unqualified tables are, for guardrails.
  std::string current_database_;
  LexMode lex_mode_;
  // Prepared statements by the server's id: their text (decided again at each execution).
  struct Prepared {
    std::shared_ptr<const std::string> sql;  // shared with an execution that waits
    LexMode mode;                            // the lexing mode it was prepared (and parsed) in
    // Its analysis, when the thread's cache keeps it (entries stay put): no lookup per execution.
    const StatementInfo* info = nullptr;
    // The cursor its last execution opened (COM_STMT_FETCH reads it), or null.
    struct Cursor {
      ResultMasking masking;    // its result's columns and how its rows are masked
      uint64_t generation = 0;  // the policy that masking was planned under
    };
    std::shared_ptr<Cursor> cursor;
    // Its parameters: how many, the types the client bound last (they apply until it binds
    // others), and which came by COM_STMT_SEND_LONG_DATA since the last execution. What an
    // approver of a held execution is shown is read with them.
    struct Parameters {
      uint16_t count = 0;
      std::string types;
      std::vector<bool> long_data;
    };
    std::shared_ptr<Parameters> parameters;
    // Its analysis: the kept one, or the thread's cache's (analysed again if it was dropped).
    const StatementInfo& Facts() const {
      return info != nullptr ? *info : Statements().Get(*sql, mode);
    }
  };
  static constexpr size_t kMaxPrepared = 16384;
  // Open cursors per session: each keeps its result's column definitions.
  static constexpr size_t kMaxCursors = 64;
  // The values a COM_STMT_EXECUTE binds, as text for an approver (the types it binds are kept
  // for the statement's later executions, whatever is decided).
  std::vector<std::string> BoundValues(const OwnedPacket& command, Prepared::Parameters* bound);
  // The client asked for COM_STMT_BULK_EXECUTE and the server has it.
  bool bulk_ = false;
  absl::flat_hash_map<uint32_t, Prepared> prepared_;
  std::string out_;    // relayed bytes not yet written to the client
  int seq_shift_ = 0;  // added to the server's sequence ids of the answer being relayed
  // The last statement read tables with masked columns: its warnings could quote their values.
  bool warnings_may_quote_ = false;
  int64_t bytes_from_client_ = 0;
  int64_t bytes_from_server_ = 0;
};

}  // namespace sluice::agent::mysql::session_internal

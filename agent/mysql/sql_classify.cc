// Classifying one MySQL / MariaDB statement by its leading keywords (sql_analysis.h lists the
// classes). Statements that read or write data, and the DDL / DCL / administration families,
// are here; SET, transactions and prepared statements are in sql_classify_set.cc.
#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "agent/mysql/sql_analysis_internal.h"

namespace sluice::agent::mysql::sql_analysis_internal {
namespace {

using C = StatementClass;
constexpr int kMaxNesting = 16;
using Classifier = void (*)(Tokens t, Context* ctx, StatementFacts* f);

void Is(StatementFacts* f, C cls, std::string kind) {
  f->cls = cls;
  f->kind = std::move(kind);
}

void Unknown(Context* ctx, StatementFacts* f, std::string kind, absl::string_view why) {
  Is(f, C::kUnknown, std::move(kind));
  if (ctx->error.empty()) ctx->error = std::string(why);
}

size_t SkipWords(Tokens t, size_t i, std::initializer_list<absl::string_view> words) {
  while (i < t.size() && std::any_of(words.begin(), words.end(),
                                     [&](absl::string_view w) { return t[i].IsWord(w); })) {
    ++i;
  }
  return i;
}

// What `inner` (a statement inside this one) found, taken over.
void TakeFacts(StatementFacts inner, StatementFacts* f) {
  for (auto& g : inner.guarded) AddUnique(&f->guarded, std::move(g));
  for (auto& r : inner.relations) AddUnique(&f->relations, std::move(r));
  for (auto& fn : inner.functions) AddUnique(&f->functions, std::move(fn));
  if (f->runs_hidden_code.empty()) f->runs_hidden_code = std::move(inner.runs_hidden_code);
  if (f->unsafe.empty()) f->unsafe = std::move(inner.unsafe);
  f->unsafe_lifts_read_only = f->unsafe_lifts_read_only || inner.unsafe_lifts_read_only;
}

// SELECT, WITH, TABLE, VALUES, (SELECT ...).
void Query(Tokens t, Context* ctx, StatementFacts* f) {
  if (WordAt(t, 0, "with")) {
    // WITH ... UPDATE / DELETE (MySQL 8): the statement after the common table expressions.
    size_t at = t.size();
    for (absl::string_view w : {"update", "delete", "insert", "replace"}) {
      at = std::min(at, FindTopLevel(t, w, 1));
    }
    if (at < t.size()) {
      StatementFacts inner = Classify(t.subspan(at), ctx);
      Is(f, inner.cls, absl::StrCat("WITH ", inner.kind));
      TakeFacts(std::move(inner), f);
      return;
    }
  }
  size_t lead = 0;
  while (PunctAt(t, lead, "(")) ++lead;
  if (!WordAt(t, lead, "select") && !WordAt(t, lead, "with") && !WordAt(t, lead, "values") &&
      !WordAt(t, lead, "table")) {
    return Unknown(ctx, f, "", "a parenthesis that holds no query");
  }
  Is(f, C::kRead, Upper(t[lead].text));
  for (size_t i = 0; i < t.size(); ++i) {
    if (!WordAt(t, i, "into")) continue;
    if (WordAt(t, i + 1, "outfile") || WordAt(t, i + 1, "dumpfile")) {
      Is(f, C::kWrite, absl::StrCat("SELECT INTO ", Upper(t[i + 1].text)));  // a server file
      return;
    }
    Is(f, C::kOther, "SELECT INTO");  // user or local variables
  }
}

void Insert(Tokens t, Context*, StatementFacts* f) {
  Is(f, C::kWrite, Upper(t[0].text));
  size_t i = SkipWords(t, 1, {"low_priority", "delayed", "high_priority", "ignore", "into"});
  ReadTableList(t, i, &f->relations);
}

void Update(Tokens t, Context* ctx, StatementFacts* f) {
  Is(f, C::kWrite, "UPDATE");
  size_t i = ReadTableList(t, SkipWords(t, 1, {"low_priority", "ignore"}), &f->relations);
  if (WithoutWhere(t, FindTopLevel(t, "set", i), &ctx->sensitive)) {
    AddUnique<std::string>(&f->guarded, "update_without_where");
  }
}

void Delete(Tokens t, Context* ctx, StatementFacts* f) {
  Is(f, C::kWrite, "DELETE");
  size_t i = SkipWords(t, 1, {"low_priority", "quick", "ignore"});
  if (!WordAt(t, i, "from")) i = ReadTableList(t, i, &f->relations);  // DELETE t1, t2 FROM ...
  size_t using_at = FindTopLevel(t, "using", i);
  if (using_at < t.size() && !PunctAt(t, using_at + 1, "(")) {
    ReadTableList(t, using_at + 1, &f->relations);
  }
  if (WithoutWhere(t, i, &ctx->sensitive))
    AddUnique<std::string>(&f->guarded, "delete_without_where");
}

// The object word of CREATE / ALTER / DROP / RENAME (its index, t.size() when none): the first
// known one, past OR REPLACE, TEMPORARY, ALGORITHM = x, DEFINER = user, SQL SECURITY x, ...
size_t ObjectAt(Tokens t) {
  static const auto* objects = new std::vector<absl::string_view>{
      "table",      "tables",  "database", "schema",  "index",   "view",   "procedure",
      "function",   "trigger", "event",    "user",    "role",    "server", "sequence",
      "tablespace", "logfile", "package",  "prepare", "instance"};
  for (size_t i = 1; i < t.size() && i < 24; ++i) {
    if (WordAt(t, i, "definer") && PunctAt(t, i + 1, "=")) {
      i += 2;  // the user: name or 'name', @ host or @'host', or CURRENT_USER[()]
      if (PunctAt(t, i + 1, "@")) i += 2;
      if (PunctAt(t, i + 1, "(") && PunctAt(t, i + 2, ")")) i += 2;
      continue;
    }
    if (WordAt(t, i, "security")) {
      ++i;  // SQL SECURITY DEFINER | INVOKER
      continue;
    }
    if (t[i].kind == TokenKind::kWord &&
        std::find(objects->begin(), objects->end(), t[i].text) != objects->end()) {
      return i;
    }
  }
  return t.size();
}

// A stored program's body: BEGIN ... END with `;` inside arrives whole, and this classifier
// cannot find where the body ends; a piece cut at a `;` inside it has more BEGINs than ENDs.
bool BodyComplete(Tokens t, size_t from) {
  int depth = 0;
  for (size_t i = from; i < t.size(); ++i) {
    if (t[i].IsWord("begin")) ++depth;
    if (t[i].IsWord("end")) --depth;
  }
  return depth == 0;
}

// The tables / database / index target that follows the object word at `obj`.
void ObjectTarget(Tokens t, size_t obj, StatementFacts* f) {
  const std::string& what = t[obj].text;
  size_t i = obj + 1;
  if (WordAt(t, i, "if")) i = SkipWords(t, i, {"if", "not", "exists"});
  if (what == "database" || what == "schema") {
    if (NameAt(t, i)) AddUnique(&f->relations, Relation{absl::AsciiStrToLower(t[i].text), ""});
  } else if (what == "table" || what == "tables" || what == "view" || what == "sequence") {
    ReadTableList(t, i, &f->relations);
  } else if (what == "index" || what == "trigger") {
    size_t on = FindTopLevel(t, "on", i);
    if (on < t.size()) ReadTableList(t, on + 1, &f->relations);
  }
}

void Create(Tokens t, Context* ctx, StatementFacts* f) {
  size_t obj = ObjectAt(t);
  if (obj == t.size()) return Unknown(ctx, f, "CREATE", "CREATE of an object not known");
  const std::string& what = t[obj].text;
  Is(f, what == "user" || what == "role" ? C::kDcl : C::kDdl, absl::StrCat("CREATE ", Upper(what)));
  if ((what == "procedure" || what == "function" || what == "trigger" || what == "event" ||
       what == "package") &&
      !BodyComplete(t, obj)) {
    return Unknown(ctx, f, f->kind, "a stored program body with ';' inside (BEGIN ... END)");
  }
  if (what == "table" && WordAt(t, 1, "or") && WordAt(t, 2, "replace")) {
    AddUnique<std::string>(&f->guarded, "drop_table");  // MariaDB drops the table it replaces
  }
  ObjectTarget(t, obj, f);
}

void Alter(Tokens t, Context* ctx, StatementFacts* f) {
  size_t obj = ObjectAt(t);
  if (obj == t.size()) return Unknown(ctx, f, "ALTER", "ALTER of an object not known");
  const std::string& what = t[obj].text;
  Is(f, what == "user" ? C::kDcl : C::kDdl, absl::StrCat("ALTER ", Upper(what)));
  if (what == "event" && !BodyComplete(t, obj)) {
    return Unknown(ctx, f, f->kind, "a stored program body with ';' inside (BEGIN ... END)");
  }
  ObjectTarget(t, obj, f);
}

void Drop(Tokens t, Context* ctx, StatementFacts* f) {
  size_t obj = ObjectAt(t);
  if (obj == t.size()) return Unknown(ctx, f, "DROP", "DROP of an object not known");
  const std::string& what = t[obj].text;
  if (what == "prepare") return Is(f, C::kOther, "DEALLOCATE PREPARE");
  Is(f, what == "user" || what == "role" ? C::kDcl : C::kDdl, absl::StrCat("DROP ", Upper(what)));
  if (what == "table" || what == "tables") AddUnique<std::string>(&f->guarded, "drop_table");
  if (what == "database" || what == "schema") {
    AddUnique<std::string>(&f->guarded, "drop_database");
  }
  ObjectTarget(t, obj, f);
}

void Rename(Tokens t, Context* ctx, StatementFacts* f) {
  size_t obj = ObjectAt(t);
  if (obj == t.size()) return Unknown(ctx, f, "RENAME", "RENAME of an object not known");
  Is(f, t[obj].text == "user" ? C::kDcl : C::kDdl, absl::StrCat("RENAME ", Upper(t[obj].text)));
  if (t[obj].text == "user") return;
  for (size_t i = obj + 1; i < t.size();) {  // a TO b, c TO d
    i = ReadTableList(t, i, &f->relations);
    if (!WordAt(t, i, "to") && !PunctAt(t, i, ",")) break;
    ++i;
  }
}

void Truncate(Tokens t, Context*, StatementFacts* f) {
  Is(f, C::kDdl, "TRUNCATE");
  AddUnique<std::string>(&f->guarded, "truncate");
  ReadTableList(t, SkipWords(t, 1, {"table"}), &f->relations);
}

// EXPLAIN / DESCRIBE / DESC, and MariaDB's ANALYZE <statement> (`executes`).
void Explained(Tokens t, size_t i, bool executes, Context* ctx, StatementFacts* f) {
  for (;;) {
    size_t before = i;
    i = SkipWords(t, i, {"extended", "partitions"});
    if (WordAt(t, i, "format") && PunctAt(t, i + 1, "=")) i += 3;
    if (WordAt(t, i, "analyze")) {
      executes = true;
      ++i;
    }
    if (i == before) break;
  }
  const std::string head = executes ? "ANALYZE" : "EXPLAIN";
  bool statement = PunctAt(t, i, "(");
  for (absl::string_view w :
       {"select", "with", "table", "values", "insert", "replace", "update", "delete"}) {
    statement = statement || WordAt(t, i, w);
  }
  if (!statement) {  // DESCRIBE t [column], EXPLAIN FOR CONNECTION n
    Is(f, C::kRead, head);
    if (!WordAt(t, i, "for")) ReadTableList(t, i, &f->relations);
    return;
  }
  StatementFacts inner = Classify(t.subspan(i), ctx);
  C cls = executes ? std::max(C::kRead, inner.cls) : C::kRead;
  if (inner.cls == C::kUnknown) cls = C::kUnknown;
  Is(f, cls, absl::StrCat(head, " ", inner.kind));
  TakeFacts(std::move(inner), f);
}

void Explain(Tokens t, Context* ctx, StatementFacts* f) { Explained(t, 1, false, ctx, f); }

void Analyze(Tokens t, Context* ctx, StatementFacts* f) {
  size_t i = SkipWords(t, 1, {"no_write_to_binlog", "local"});
  if (WordAt(t, i, "table") || WordAt(t, i, "tables")) {
    Is(f, C::kDdl, "ANALYZE TABLE");  // updates the statistics
    ReadTableList(t, i + 1, &f->relations);
    return;
  }
  Explained(t, 1, true, ctx, f);
}

// OPTIMIZE / REPAIR / CHECK TABLE: table maintenance, as administration.
void Maintenance(Tokens t, Context*, StatementFacts* f) {
  Is(f, C::kDdl, absl::StrCat(Upper(t[0].text), " TABLE"));
  size_t i = SkipWords(t, 1, {"no_write_to_binlog", "local", "table", "tables", "view"});
  ReadTableList(t, i, &f->relations);
}

// Server administration: FLUSH, INSTALL, RESET, PURGE, CHANGE MASTER, STOP SLAVE, SHUTDOWN, ...
void Admin(Tokens t, Context*, StatementFacts* f) {
  std::string kind = Upper(t[0].text);
  if (t.size() > 1 && t[1].kind == TokenKind::kWord) absl::StrAppend(&kind, " ", Upper(t[1].text));
  Is(f, C::kDdl, std::move(kind));
}

void Call(Tokens t, Context*, StatementFacts* f) {
  Is(f, C::kWrite, "CALL");
  f->runs_hidden_code = "CALL of a procedure";
  size_t i = 1;
  while (NameAt(t, i) && PunctAt(t, i + 1, ".")) i += 2;
  if (NameAt(t, i)) AddUnique(&f->functions, absl::AsciiStrToLower(t[i].text));
}

void Load(Tokens t, Context* ctx, StatementFacts* f) {
  if (WordAt(t, 1, "index")) return Is(f, C::kDdl, "LOAD INDEX");
  if (!WordAt(t, 1, "data") && !WordAt(t, 1, "xml")) {
    return Unknown(ctx, f, "LOAD", "LOAD of something not known");
  }
  Is(f, C::kWrite, absl::StrCat("LOAD ", Upper(t[1].text)));
  size_t infile = FindTopLevel(t, "infile", 2);
  for (size_t i = 2; i < infile; ++i) {
    if (t[i].IsWord("local")) {
      f->unsafe = "LOAD DATA LOCAL: the server would ask the client for a file";
    }
  }
}

void Lock(Tokens t, Context*, StatementFacts* f) {
  Is(f, C::kWrite, WordAt(t, 1, "table") || WordAt(t, 1, "tables") ? "LOCK TABLES" : "LOCK");
  ReadTableList(t, 2, &f->relations);
}

void HandlerStatement(Tokens t, Context*, StatementFacts* f) {
  Is(f, C::kWrite, "HANDLER");
  ReadTableList(t, 1, &f->relations);
}

void Use(Tokens t, Context* ctx, StatementFacts* f) {
  if (t.size() != 2 || !NameAt(t, 1)) return Unknown(ctx, f, "USE", "USE without one database");
  Is(f, C::kOther, "USE");
  f->database = absl::AsciiStrToLower(t[1].text);
}

void Begin(Tokens t, Context* ctx, StatementFacts* f) {
  if (t.size() == 1 || (t.size() == 2 && WordAt(t, 1, "work"))) return Is(f, C::kOther, "BEGIN");
  Unknown(ctx, f, "BEGIN NOT ATOMIC", "a compound statement (BEGIN NOT ATOMIC ... END)");
}

template <C cls>
void Plain(Tokens t, Context*, StatementFacts* f) {
  Is(f, cls, Upper(t[0].text));
}

void Compound(Tokens t, Context* ctx, StatementFacts* f) {
  Unknown(ctx, f, Upper(t[0].text), "a compound statement (IF, CASE, LOOP, WHILE, REPEAT, FOR)");
}

void Delimiter(Tokens, Context* ctx, StatementFacts* f) {
  Unknown(ctx, f, "DELIMITER", "DELIMITER is a command of the mysql client, not SQL");
}

void Binlog(Tokens, Context* ctx, StatementFacts* f) {
  Unknown(ctx, f, "BINLOG", "BINLOG applies replication events the agent cannot read");
}

const absl::flat_hash_map<absl::string_view, Classifier>& Handlers() {
  static const auto* h =
      new absl::flat_hash_map<absl::string_view, Classifier>{{"select", Query},
                                                             {"with", Query},
                                                             {"table", Query},
                                                             {"values", Query},
                                                             {"insert", Insert},
                                                             {"replace", Insert},
                                                             {"update", Update},
                                                             {"delete", Delete},
                                                             {"create", Create},
                                                             {"alter", Alter},
                                                             {"drop", Drop},
                                                             {"rename", Rename},
                                                             {"truncate", Truncate},
                                                             {"explain", Explain},
                                                             {"describe", Explain},
                                                             {"desc", Explain},
                                                             {"analyze", Analyze},
                                                             {"optimize", Maintenance},
                                                             {"repair", Maintenance},
                                                             {"check", Maintenance},
                                                             {"checksum", Plain<C::kRead>},
                                                             {"show", Plain<C::kRead>},
                                                             {"help", Plain<C::kRead>},
                                                             {"flush", Admin},
                                                             {"install", Admin},
                                                             {"uninstall", Admin},
                                                             {"reset", Admin},
                                                             {"purge", Admin},
                                                             {"change", Admin},
                                                             {"stop", Admin},
                                                             {"shutdown", Admin},
                                                             {"backup", Admin},
                                                             {"cache", Admin},
                                                             {"restart", Admin},
                                                             {"grant", Plain<C::kDcl>},
                                                             {"revoke", Plain<C::kDcl>},
                                                             {"call", Call},
                                                             {"do", Plain<C::kWrite>},
                                                             {"handler", HandlerStatement},
                                                             {"lock", Lock},
                                                             {"xa", Plain<C::kWrite>},
                                                             {"load", Load},
                                                             {"unlock", Plain<C::kOther>},
                                                             {"use", Use},
                                                             {"kill", Plain<C::kOther>},
                                                             {"begin", Begin},
                                                             {"commit", Plain<C::kOther>},
                                                             {"rollback", Plain<C::kOther>},
                                                             {"savepoint", Plain<C::kOther>},
                                                             {"release", Plain<C::kOther>},
                                                             {"signal", Plain<C::kOther>},
                                                             {"resignal", Plain<C::kOther>},
                                                             {"get", Plain<C::kOther>},
                                                             {"deallocate", Plain<C::kOther>},
                                                             {"set", ClassifySet},
                                                             {"start", ClassifyStart},
                                                             {"prepare", ClassifyPrepare},
                                                             {"execute", ClassifyExecute},
                                                             {"if", Compound},
                                                             {"while", Compound},
                                                             {"loop", Compound},
                                                             {"repeat", Compound},
                                                             {"case", Compound},
                                                             {"for", Compound},
                                                             {"declare", Compound},
                                                             {"delimiter", Delimiter},
                                                             {"binlog", Binlog}};
  return *h;
}

}  // namespace

StatementFacts Classify(Tokens t, Context* ctx) {
  StatementFacts f;
  // Bounded: a text of statements inside statements must not exhaust the stack.
  struct Nest {
    Context* ctx;
    ~Nest() { --ctx->nesting; }
  } nest{ctx};
  if (++ctx->nesting > kMaxNesting) {
    Unknown(ctx, &f, "", "statements nested too deep");
    return f;
  }
  if (!ParensBalanced(t)) {
    Unknown(ctx, &f, "", "unbalanced parentheses");
  } else if (PunctAt(t, 0, "(")) {
    Query(t, ctx, &f);
  } else if (t[0].kind != TokenKind::kWord) {
    Unknown(ctx, &f, "", "a statement that does not start with a keyword");
  } else if (PunctAt(t, 1, ":")) {
    Unknown(ctx, &f, "", "a labelled compound statement");
  } else if (auto h = Handlers().find(t[0].text); h != Handlers().end()) {
    h->second(t, ctx, &f);
  } else {
    Unknown(ctx, &f, "", absl::StrCat("unknown statement '", Upper(t[0].text), "'"));
  }
  CollectRelations(t, &f.relations);
  CollectDefinedNames(t, &f.defined_names);
  f.assigns_user_variables = AssignsUserVariables(t);
  std::vector<std::string> stored;
  CollectFunctions(t, &f.functions, &stored);
  const auto& writers = WritingFunctions();
  for (const std::string& fn : f.functions) {
    if (f.cls < C::kWrite && std::find(writers.begin(), writers.end(), fn) != writers.end()) {
      f.cls = C::kWrite;
    }
  }
  // A stored function or UDF runs code the agent cannot see, which may write.
  if (!stored.empty()) {
    if (f.cls < C::kWrite) f.cls = C::kWrite;
    if (f.runs_hidden_code.empty()) {
      f.runs_hidden_code = absl::StrCat(stored.front(), "(), which may be a stored function");
    }
  }
  return f;
}

}  // namespace sluice::agent::mysql::sql_analysis_internal

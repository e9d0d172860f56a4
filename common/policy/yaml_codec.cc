#include "common/policy/yaml_codec.h"

#include <google/protobuf/duration.pb.h>
#include <yaml-cpp/yaml.h>

#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/policy/resource.h"
#include "common/policy/validation.h"

namespace sluice::policy {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

struct FieldErr {
  std::string field;
  std::string message;
};

std::string Join(const std::string& path, const std::string& key) {
  return path.empty() ? key : absl::StrCat(path, ".", key);
}

// The prefix every value of our enums carries ("UPSTREAM_TLS_"), derived from X_UNSPECIFIED = 0.
std::string EnumPrefix(const EnumDescriptor* e) {
  std::string first = e->value(0)->name();
  constexpr absl::string_view kUnspecified = "UNSPECIFIED";
  if (first.size() > kUnspecified.size() && absl::EndsWith(first, kUnspecified)) {
    return first.substr(0, first.size() - kUnspecified.size());
  }
  return "";
}

std::string EnumYamlName(const google::protobuf::EnumValueDescriptor* v) {
  std::string prefix = EnumPrefix(v->type());
  return absl::AsciiStrToLower(v->name().substr(prefix.size()));
}

std::vector<std::string> EnumChoices(const EnumDescriptor* e) {
  std::vector<std::string> out;
  for (int i = 1; i < e->value_count(); ++i) out.push_back(EnumYamlName(e->value(i)));
  return out;
}

std::string NodeKind(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Null:
      return "empty";
    default:
      return "undefined";
  }
}

bool ParseDuration(absl::string_view text, google::protobuf::Duration* out) {
  absl::Duration d;
  int64_t days = 0;
  if (absl::ConsumeSuffix(&text, "d")) {
    // Days (retention periods): a whole number of them.
    if (!absl::SimpleAtoi(text, &days) || days < 0 || days > 365000) return false;
    d = absl::Hours(24 * days);
  } else if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration()) {
    return false;
  }
  out->set_seconds(absl::IDivDuration(d, absl::Seconds(1), &d));
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
  return true;
}

bool ToMessage(const YAML::Node& node, Message* msg, const std::string& path, FieldErr* err);

bool SetScalar(const YAML::Node& node, Message* msg, const FieldDescriptor* f,
               const std::string& path, FieldErr* err) {
  const Reflection* r = msg->GetReflection();
  bool repeated = f->is_repeated();
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    Message* sub = repeated ? r->AddMessage(msg, f) : r->MutableMessage(msg, f);
    return ToMessage(node, sub, path, err);
  }
  if (!node.IsScalar()) {
    *err = {path, absl::StrCat("expected a single value, got ", NodeKind(node))};
    return false;
  }
  const std::string& text = node.Scalar();
  if (text.size() > kMaxStringBytes) {
    *err = {path, absl::StrCat("value is longer than ", kMaxStringBytes, " bytes")};
    return false;
  }
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      repeated ? r->AddString(msg, f, text) : r->SetString(msg, f, text);
      return true;
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!absl::SimpleAtoi(text, &v)) {
        *err = {path, absl::StrCat("expected a non-negative integer, got '", text, "'")};
        return false;
      }
      repeated ? r->AddUInt32(msg, f, v) : r->SetUInt32(msg, f, v);
      return true;
    }
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!absl::SimpleAtoi(text, &v)) {
        *err = {path, absl::StrCat("expected an integer, got '", text, "'")};
        return false;
      }
      repeated ? r->AddInt32(msg, f, v) : r->SetInt32(msg, f, v);
      return true;
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!absl::SimpleAtoi(text, &v)) {
        *err = {path, absl::StrCat("expected a non-negative integer, got '", text, "'")};
        return false;
      }
      repeated ? r->AddUInt64(msg, f, v) : r->SetUInt64(msg, f, v);
      return true;
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!absl::SimpleAtoi(text, &v)) {
        *err = {path, absl::StrCat("expected an integer, got '", text, "'")};
        return false;
      }
      repeated ? r->AddInt64(msg, f, v) : r->SetInt64(msg, f, v);
      return true;
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      std::string lower = absl::AsciiStrToLower(text);
      bool v;
      if (lower == "true" || lower == "yes") {
        v = true;
      } else if (lower == "false" || lower == "no") {
        v = false;
      } else {
        *err = {path, absl::StrCat("expected true or false, got '", text, "'")};
        return false;
      }
      repeated ? r->AddBool(msg, f, v) : r->SetBool(msg, f, v);
      return true;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const EnumDescriptor* e = f->enum_type();
      std::string want = absl::AsciiStrToUpper(absl::StrReplaceAll(text, {{"-", "_"}}));
      const auto* v = e->FindValueByName(EnumPrefix(e) + want);
      if (v == nullptr || v->number() == 0) {
        *err = {path,
                absl::StrCat("'", text, "' is not one of: ", absl::StrJoin(EnumChoices(e), ", "))};
        return false;
      }
      repeated ? r->AddEnum(msg, f, v) : r->SetEnum(msg, f, v);
      return true;
    }
    default:
      *err = {path, "unsupported field type"};
      return false;
  }
}

bool ToMessage(const YAML::Node& node, Message* msg, const std::string& path, FieldErr* err) {
  const Descriptor* d = msg->GetDescriptor();
  if (d->full_name() == "google.protobuf.Duration") {
    if (!node.IsScalar() ||
        !ParseDuration(node.Scalar(), static_cast<google::protobuf::Duration*>(msg))) {
      *err = {path, "expected a duration such as 30s, 5m, 1h or 90d"};
      return false;
    }
    return true;
  }
  if (!node.IsMap()) {
    *err = {path, absl::StrCat("expected a mapping of fields, got ", NodeKind(node))};
    return false;
  }
  const Reflection* r = msg->GetReflection();
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) {
      *err = {path, "field names must be plain strings"};
      return false;
    }
    const std::string key = kv.first.Scalar();
    const std::string fpath = Join(path, key);
    const FieldDescriptor* f = d->FindFieldByName(key);
    if (f == nullptr) {
      std::vector<std::string> known;
      for (int i = 0; i < d->field_count(); ++i) known.push_back(d->field(i)->name());
      *err = {fpath, absl::StrCat("unknown field; fields of ", d->name(),
                                  " are: ", absl::StrJoin(known, ", "))};
      return false;
    }
    const YAML::Node& value = kv.second;
    if (value.IsNull()) continue;  // `field:` with no value = default
    if (f->is_map()) {
      if (!value.IsMap()) {
        *err = {fpath, absl::StrCat("expected a mapping of key: value, got ", NodeKind(value))};
        return false;
      }
      const FieldDescriptor* kf = f->message_type()->map_key();
      const FieldDescriptor* vf = f->message_type()->map_value();
      for (const auto& entry : value) {
        if (!entry.first.IsScalar() || !entry.second.IsScalar()) {
          *err = {fpath, "map keys and values must be plain strings"};
          return false;
        }
        Message* e = r->AddMessage(msg, f);
        e->GetReflection()->SetString(e, kf, entry.first.Scalar());
        e->GetReflection()->SetString(e, vf, entry.second.Scalar());
      }
    } else if (f->is_repeated()) {
      if (!value.IsSequence()) {
        *err = {fpath, absl::StrCat("expected a list, got ", NodeKind(value))};
        return false;
      }
      for (size_t i = 0; i < value.size(); ++i) {
        if (!SetScalar(value[i], msg, f, absl::StrCat(fpath, "[", i, "]"), err)) return false;
      }
    } else if (!SetScalar(value, msg, f, fpath, err)) {
      return false;
    }
  }
  return true;
}

using Json = nlohmann::ordered_json;

Json MessageToJson(const Message& msg);

Json ValueToJson(const Message& msg, const FieldDescriptor* f, int index) {
  const Reflection* r = msg.GetReflection();
  bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      return rep ? r->GetRepeatedString(msg, f, index) : r->GetString(msg, f);
    case FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r->GetRepeatedUInt32(msg, f, index) : r->GetUInt32(msg, f);
    case FieldDescriptor::CPPTYPE_INT32:
      return rep ? r->GetRepeatedInt32(msg, f, index) : r->GetInt32(msg, f);
    case FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r->GetRepeatedUInt64(msg, f, index) : r->GetUInt64(msg, f);
    case FieldDescriptor::CPPTYPE_INT64:
      return rep ? r->GetRepeatedInt64(msg, f, index) : r->GetInt64(msg, f);
    case FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r->GetRepeatedBool(msg, f, index) : r->GetBool(msg, f);
    case FieldDescriptor::CPPTYPE_ENUM:
      return EnumYamlName(rep ? r->GetRepeatedEnum(msg, f, index) : r->GetEnum(msg, f));
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return MessageToJson(rep ? r->GetRepeatedMessage(msg, f, index) : r->GetMessage(msg, f));
    default:
      return nullptr;
  }
}

// The same shape operators write in YAML: field names as in policy.proto, enums in lower case
// without prefix, durations as "300s", maps sorted by key, fields at their default omitted.
Json MessageToJson(const Message& msg) {
  if (msg.GetDescriptor()->full_name() == "google.protobuf.Duration") {
    const auto& dur = static_cast<const google::protobuf::Duration&>(msg);
    return absl::FormatDuration(absl::Seconds(dur.seconds()) + absl::Nanoseconds(dur.nanos()));
  }
  const Reflection* r = msg.GetReflection();
  const Descriptor* d = msg.GetDescriptor();
  Json out = Json::object();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_repeated() ? r->FieldSize(msg, f) == 0 : !r->HasField(msg, f)) continue;
    if (f->is_map()) {
      std::map<std::string, std::string> sorted;
      for (int j = 0; j < r->FieldSize(msg, f); ++j) {
        const Message& e = r->GetRepeatedMessage(msg, f, j);
        const auto* er = e.GetReflection();
        sorted[er->GetString(e, f->message_type()->map_key())] =
            er->GetString(e, f->message_type()->map_value());
      }
      Json m = Json::object();
      for (const auto& [k, v] : sorted) m[k] = v;
      out[f->name()] = std::move(m);
    } else if (f->is_repeated()) {
      Json a = Json::array();
      for (int j = 0; j < r->FieldSize(msg, f); ++j) a.push_back(ValueToJson(msg, f, j));
      out[f->name()] = std::move(a);
    } else {
      out[f->name()] = ValueToJson(msg, f, -1);
    }
  }
  return out;
}

// Emits JSON as block YAML; maps of scalars and lists of scalars in flow style.
void EmitYaml(YAML::Emitter& out, const Json& j) {
  auto all_scalars = [](const Json& c) {
    for (const auto& v : c) {
      if (v.is_structured()) return false;
    }
    return true;
  };
  if (j.is_object()) {
    if (!j.empty() && all_scalars(j) && j.size() <= 4) out << YAML::Flow;
    out << YAML::BeginMap;
    for (auto it = j.begin(); it != j.end(); ++it) {
      out << YAML::Key << it.key() << YAML::Value;
      EmitYaml(out, it.value());
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    if (all_scalars(j)) out << YAML::Flow;
    out << YAML::BeginSeq;
    for (const auto& v : j) EmitYaml(out, v);
    out << YAML::EndSeq;
  } else if (j.is_string()) {
    out << j.get<std::string>();
  } else if (j.is_boolean()) {
    out << j.get<bool>();
  } else if (j.is_number_unsigned()) {
    out << j.get<uint64_t>();
  } else if (j.is_number_integer()) {
    out << j.get<int64_t>();
  } else {
    out << YAML::Null;
  }
}

Json ResourceJson(const v1::Resource& resource) {
  Json j = Json::object();
  j["kind"] = KindOf(resource);
  if (const Message* spec = Spec(resource)) {
    Json fields = MessageToJson(*spec);
    for (auto it = fields.begin(); it != fields.end(); ++it) j[it.key()] = it.value();
  }
  return j;
}

}  // namespace

std::string DocumentError::ToString(absl::string_view source) const {
  std::string out;
  if (!source.empty()) absl::StrAppend(&out, source, ": ");
  absl::StrAppend(&out, "document ", index + 1);
  if (!kind.empty() || !name.empty()) {
    absl::StrAppend(&out, " (", kind, kind.empty() || name.empty() ? "" : " ", name, ")");
  }
  absl::StrAppend(&out, ": ");
  if (!field.empty()) absl::StrAppend(&out, field, ": ");
  absl::StrAppend(&out, message);
  return out;
}

ParsedDocuments ParseYamlDocuments(absl::string_view text) {
  ParsedDocuments out;
  if (text.size() > kMaxYamlBytes) {
    out.errors.push_back(
        {0, "", "", "", absl::StrCat("input is larger than ", kMaxYamlBytes, " bytes")});
    return out;
  }
  std::vector<YAML::Node> docs;
  try {
    // yaml-cpp reports syntax errors by exception; they stop at this boundary.
    docs = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    out.errors.push_back({0, "", "", "",
                          absl::StrCat("YAML syntax error at line ", e.mark.line + 1, ", column ",
                                       e.mark.column + 1, ": ", e.msg)});
    return out;
  }
  if (docs.size() > kMaxDocuments) {
    out.errors.push_back({0, "", "", "", absl::StrCat("more than ", kMaxDocuments, " documents")});
    return out;
  }
  for (size_t i = 0; i < docs.size(); ++i) {
    const YAML::Node& doc = docs[i];
    int index = static_cast<int>(i);
    if (doc.IsNull()) continue;
    if (!doc.IsMap()) {
      out.errors.push_back(
          {index, "", "", "", absl::StrCat("expected a mapping, got ", NodeKind(doc))});
      continue;
    }
    YAML::Node kind_node = doc["kind"];
    std::string name = doc["name"] && doc["name"].IsScalar() ? doc["name"].Scalar() : "";
    if (!kind_node || !kind_node.IsScalar()) {
      out.errors.push_back(
          {index, "", name, "kind", "required: the resource kind, e.g. Connection"});
      continue;
    }
    auto kind = CanonicalKind(kind_node.Scalar());
    if (!kind.ok()) {
      out.errors.push_back({index, "", name, "kind", std::string(kind.status().message())});
      continue;
    }
    YAML::Node spec_node(YAML::NodeType::Map);
    for (const auto& kv : doc) {
      // `kind` picks the message; `meta` is what `get -o json` shows and apply ignores.
      if (kv.first.IsScalar() && (kv.first.Scalar() == "kind" || kv.first.Scalar() == "meta"))
        continue;
      spec_node[kv.first] = kv.second;
    }
    v1::Resource resource;
    FieldErr err;
    if (!ToMessage(spec_node, MutableSpec(&resource, *kind), "", &err)) {
      out.errors.push_back({index, *kind, name, err.field, err.message});
      continue;
    }
    for (const FieldError& fe : ValidateResource(resource)) {
      out.errors.push_back({index, *kind, name, fe.field, fe.message});
    }
    out.resources.push_back(std::move(resource));
    out.positions.push_back(index);
  }
  return out;
}

std::string ResourceToYaml(const v1::Resource& resource) {
  YAML::Emitter out;
  EmitYaml(out, ResourceJson(resource));
  return std::string(out.c_str()) + "\n";
}

std::string ResourceToJson(const v1::Resource& resource) {
  Json j = ResourceJson(resource);
  if (resource.has_meta()) j["meta"] = MessageToJson(resource.meta());
  return j.dump(2);
}

}  // namespace sluice::policy

#include "common/policy/resource.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace sluice::policy {

using v1::Resource;

const std::vector<KindInfo>& AllKinds() {
  static const auto* kinds = new std::vector<KindInfo>{
      {"Connection", Resource::kConnection},   {"Issuer", Resource::kIssuer},
      {"AccessRule", Resource::kAccessRule},   {"Guardrail", Resource::kGuardrail},
      {"MaskingRule", Resource::kMaskingRule}, {"ApprovalPolicy", Resource::kApprovalPolicy},
      {"Webhook", Resource::kWebhook},         {"RetentionPolicy", Resource::kRetentionPolicy},
  };
  return *kinds;
}

absl::StatusOr<std::string> CanonicalKind(absl::string_view text) {
  std::string key = absl::AsciiStrToLower(absl::StrReplaceAll(text, {{"_", ""}, {"-", ""}}));
  std::vector<std::string> names;
  for (const KindInfo& k : AllKinds()) {
    std::string lower = absl::AsciiStrToLower(k.kind);
    if (key == lower || key == lower + "s") return std::string(k.kind);
    names.emplace_back(k.kind);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown kind '", text, "'; kinds are: ", absl::StrJoin(names, ", ")));
}

const google::protobuf::Message* Spec(const Resource& resource) {
  const auto* desc = Resource::descriptor();
  const auto* refl = Resource::GetReflection();
  const auto* field = refl->GetOneofFieldDescriptor(resource, desc->FindOneofByName("kind"));
  if (field == nullptr) return nullptr;
  return &refl->GetMessage(resource, field);
}

google::protobuf::Message* MutableSpec(Resource* resource, absl::string_view kind) {
  for (const KindInfo& k : AllKinds()) {
    if (k.kind == kind) {
      const auto* field = Resource::descriptor()->FindFieldByNumber(k.field_number);
      return Resource::GetReflection()->MutableMessage(resource, field);
    }
  }
  return nullptr;
}

std::string KindOf(const Resource& resource) {
  for (const KindInfo& k : AllKinds()) {
    if (static_cast<int>(resource.kind_case()) == k.field_number) return std::string(k.kind);
  }
  return "";
}

std::string NameOf(const Resource& resource) {
  const google::protobuf::Message* spec = Spec(resource);
  if (spec == nullptr) return "";
  const auto* field = spec->GetDescriptor()->FindFieldByName("name");
  return spec->GetReflection()->GetString(*spec, field);
}

std::string SecretOf(const Resource& resource) {
  if (resource.has_connection()) return resource.connection().credentials().password();
  if (resource.has_webhook()) return resource.webhook().secret();
  return "";
}

std::string TakeSecret(Resource* resource) {
  std::string secret = SecretOf(*resource);
  SetSecret(resource, "");
  return secret;
}

void SetSecret(Resource* resource, std::string secret) {
  if (resource->has_connection()) {
    if (!secret.empty() || resource->connection().has_credentials()) {
      resource->mutable_connection()->mutable_credentials()->set_password(std::move(secret));
    }
  } else if (resource->has_webhook()) {
    resource->mutable_webhook()->set_secret(std::move(secret));
  }
}

void Redact(Resource* resource) {
  if (!SecretOf(*resource).empty()) SetSecret(resource, std::string(kRedacted));
}

}  // namespace sluice::policy

#include "common/cloud/sigv4.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/crypto.h"
#include "common/url_encoding.h"

namespace sluice::cloud {
namespace {

constexpr size_t kMaxSignedHeaders = 64;

bool Unreserved(unsigned char c) {
  return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

std::string Trimmed(absl::string_view v) {
  std::string out;
  for (absl::string_view word : absl::StrSplit(v, absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
    if (!out.empty()) out.push_back(' ');
    out.append(word.data(), word.size());
  }
  return out;
}

}  // namespace

std::string SigV4Encode(absl::string_view s, bool keep_slash) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (Unreserved(c) || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::StatusOr<SigV4Authorization> ParseSigV4Authorization(absl::string_view header) {
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("the SigV4 Authorization header: ", what));
  };
  if (!absl::ConsumePrefix(&header, kSigV4Algorithm) || header.empty() || header[0] != ' ')
    return bad("not AWS4-HMAC-SHA256");
  SigV4Authorization a;
  bool credential = false, headers = false, signature = false;
  for (absl::string_view part : absl::StrSplit(header, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (absl::ConsumePrefix(&part, "Credential=")) {
      std::vector<std::string> scope = absl::StrSplit(part, '/');
      if (scope.size() != 5 || scope[4] != "aws4_request" || scope[0].empty() ||
          scope[1].size() != 8 || scope[2].empty() || scope[3].empty()) {
        return bad("Credential is not AKID/date/region/service/aws4_request");
      }
      a.access_key_id = scope[0];
      a.date = scope[1];
      a.region = scope[2];
      a.service = scope[3];
      credential = true;
    } else if (absl::ConsumePrefix(&part, "SignedHeaders=")) {
      a.signed_headers = absl::StrSplit(part, ';');
      if (a.signed_headers.empty() || a.signed_headers.size() > kMaxSignedHeaders)
        return bad("SignedHeaders is empty or too long");
      for (const std::string& h : a.signed_headers) {
        if (h.empty() || h != absl::AsciiStrToLower(h)) return bad("a SignedHeaders name");
      }
      if (!std::is_sorted(a.signed_headers.begin(), a.signed_headers.end()))
        return bad("SignedHeaders is not sorted");
      headers = true;
    } else if (absl::ConsumePrefix(&part, "Signature=")) {
      if (part.size() != 64 || !std::all_of(part.begin(), part.end(), [](char c) {
            return absl::ascii_isxdigit(static_cast<unsigned char>(c));
          })) {
        return bad("Signature is not 64 hex digits");
      }
      a.signature = absl::AsciiStrToLower(part);
      signature = true;
    } else {
      return bad("an unknown part");
    }
  }
  if (!credential || !headers || !signature)
    return bad("Credential, SignedHeaders and Signature are all required");
  return a;
}

absl::StatusOr<std::string> SigV4CanonicalRequest(const SigV4Request& request,
                                                  const std::vector<std::string>& signed_headers) {
  std::string out = absl::StrCat(request.method, "\n");
  std::string decoded;
  if (!PercentDecode(request.path, &decoded)) return absl::InvalidArgumentError("a malformed path");
  absl::StrAppend(&out, SigV4Encode(decoded.empty() ? "/" : decoded, true), "\n");
  std::vector<std::pair<std::string, std::string>> params;
  if (!request.query.empty()) {
    for (absl::string_view pair : absl::StrSplit(request.query, '&')) {
      if (pair.empty()) continue;
      const size_t eq = pair.find('=');
      std::string name, value;
      if (!PercentDecode(pair.substr(0, eq), &name) ||
          (eq != absl::string_view::npos && !PercentDecode(pair.substr(eq + 1), &value))) {
        return absl::InvalidArgumentError("a malformed query");
      }
      params.emplace_back(SigV4Encode(name, false), SigV4Encode(value, false));
    }
  }
  std::sort(params.begin(), params.end());
  std::vector<std::string> joined;
  for (const auto& [n, v] : params) joined.push_back(absl::StrCat(n, "=", v));
  absl::StrAppend(&out, absl::StrJoin(joined, "&"), "\n");
  std::string payload;
  for (const std::string& name : signed_headers) {
    std::vector<std::string> values;
    for (const auto& [n, v] : request.headers) {
      if (absl::EqualsIgnoreCase(n, name)) values.push_back(Trimmed(v));
    }
    if (values.empty())
      return absl::InvalidArgumentError(absl::StrCat("the signed header ", name, " is missing"));
    absl::StrAppend(&out, name, ":", absl::StrJoin(values, ","), "\n");
    if (name == "x-amz-content-sha256") payload = values.front();
  }
  if (payload.empty()) {
    for (const auto& [n, v] : request.headers) {
      if (absl::EqualsIgnoreCase(n, "x-amz-content-sha256")) payload = Trimmed(v);
    }
  }
  if (payload.empty()) return absl::InvalidArgumentError("no x-amz-content-sha256 header");
  absl::StrAppend(&out, "\n", absl::StrJoin(signed_headers, ";"), "\n", payload);
  return out;
}

std::string SigV4Signature(absl::string_view secret, absl::string_view amz_date,
                           const SigV4Authorization& auth, absl::string_view canonical_request) {
  const std::string scope =
      absl::StrCat(auth.date, "/", auth.region, "/", auth.service, "/aws4_request");
  const std::string to_sign = absl::StrCat(kSigV4Algorithm, "\n", amz_date, "\n", scope, "\n",
                                           Sha256Hex(canonical_request));
  std::string key = HmacSha256(absl::StrCat("AWS4", secret), auth.date);
  key = HmacSha256(key, auth.region);
  key = HmacSha256(key, auth.service);
  key = HmacSha256(key, "aws4_request");
  return HexEncode(HmacSha256(key, to_sign));
}

std::string SigV4AuthorizationHeader(const SigV4Authorization& auth, absl::string_view signature) {
  return absl::StrCat(kSigV4Algorithm, " Credential=", auth.access_key_id, "/", auth.date, "/",
                      auth.region, "/", auth.service,
                      "/aws4_request, SignedHeaders=", absl::StrJoin(auth.signed_headers, ";"),
                      ", Signature=", signature);
}

}  // namespace sluice::cloud

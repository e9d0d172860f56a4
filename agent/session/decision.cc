#include "agent/session/decision.h"

namespace sluice::agent::session {

const char* ClassName(StatementClass c) {
  switch (c) {
    case StatementClass::kEmpty:
      return "empty";
    case StatementClass::kRead:
      return "read";
    case StatementClass::kOther:
      return "other";
    case StatementClass::kWrite:
      return "write";
    case StatementClass::kDdl:
      return "ddl";
    case StatementClass::kDcl:
      return "dcl";
    case StatementClass::kUnknown:
      return "unknown";
  }
  return "unknown";
}

const char* ActionName(GuardrailDecision::Action a) {
  switch (a) {
    case GuardrailDecision::kAllow:
      return "allow";
    case GuardrailDecision::kAlert:
      return "alert";
    case GuardrailDecision::kRequireApproval:
      return "require_approval";
    case GuardrailDecision::kBlock:
      return "block";
  }
  return "block";
}

}  // namespace sluice::agent::session

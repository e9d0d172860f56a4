// The one place where absl::Status and grpc::Status are converted, at the RPC edge.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace sluice {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace sluice

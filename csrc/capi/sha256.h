// SHA-256 (FIPS 180-4) of a byte buffer, as lowercase hex: the digests of the artefact's integrity record.
#pragma once

#include <cstddef>
#include <string>

namespace mdanet::capi {

std::string sha256_hex(const void* data, size_t size);

}  // namespace mdanet::capi

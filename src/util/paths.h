// Locations of the shared data/fixtures folder and other well-known paths.
#pragma once
#include <filesystem>
#include <string>

namespace guardkit {

// The shared/ folder (datasets, fixtures): $GUARDKIT_SHARED if set, else the one next to the source tree.
std::filesystem::path shared_dir();

// Reads a whole file; throws guardkit::Error naming the path when it cannot.
std::string read_file(const std::filesystem::path& path);

// Writes `content` to `path` through a temporary file and a rename, so a kill never leaves a half-written file
// (progress files of resumable jobs, checkpoints' metadata).
void write_file_atomic(const std::filesystem::path& path, const std::string& content);

}  // namespace guardkit

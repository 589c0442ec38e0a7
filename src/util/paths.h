// Locations of the shared data/fixtures folder and other well-known paths.
#pragma once
#include <filesystem>
#include <string>

namespace guardkit {

// The shared/ folder (datasets, fixtures): $GUARDKIT_SHARED if set, else the one next to the source tree.
std::filesystem::path shared_dir();

// Reads a whole file; throws guardkit::Error naming the path when it cannot.
std::string read_file(const std::filesystem::path& path);

}  // namespace guardkit

// Precompiled header for the libtorch-heavy targets. Only heavy, stable headers belong here.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <fmt/format.h>
#include <string>
#include <vector>
#include <memory>
#include <optional>

#include "activation_kind.h"

namespace fastnn {
namespace {

struct NamedAct {
  const char* name;
  Act kind;
};

constexpr NamedAct kActs[] = {
    {"identity", Act::identity}, {"relu", Act::relu},   {"leaky_relu", Act::leaky_relu},
    {"elu", Act::elu},           {"sigmoid", Act::sigmoid}, {"tanh", Act::tanh},
    {"gelu", Act::gelu},         {"gelu_tanh", Act::gelu_tanh}, {"silu", Act::silu},
    {"softplus", Act::softplus},
};

}  // namespace

bool parse_act(const std::string& name, Act* out) {
  for (const auto& entry : kActs) {
    if (name == entry.name) {
      *out = entry.kind;
      return true;
    }
  }
  return false;
}

const char* act_name(Act kind) {
  for (const auto& entry : kActs) {
    if (entry.kind == kind) return entry.name;
  }
  return "unknown";
}

}  // namespace fastnn

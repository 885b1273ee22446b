// The activation functions fastnn knows, shared by the elementwise kernels and the fused dense
// kernels so that both accept the same names and parameters.
#pragma once

#include <string>

namespace fastnn {

enum class Act {
  identity,
  relu,
  leaky_relu,  // x if x > 0 else alpha * x (alpha: negative slope)
  elu,         // x if x > 0 else alpha * (exp(x) - 1)
  sigmoid,
  tanh,
  gelu,        // x * Phi(x), exact (erf) form
  gelu_tanh,   // the tanh approximation of gelu
  silu,        // x * sigmoid(x)
  softplus,    // log(1 + exp(x)), linear above x = 20 as in PyTorch
};

struct Activation {
  Act kind = Act::identity;
  double alpha = 0.0;  // used by leaky_relu and elu only
};

// Parses "relu", "leaky_relu", ...; returns false for an unknown name.
bool parse_act(const std::string& name, Act* out);
const char* act_name(Act kind);

}  // namespace fastnn

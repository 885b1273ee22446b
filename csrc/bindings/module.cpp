// The private extension module fastnn._core. Kernel families register themselves (see
// Registrar in check.h); they are added in name order so the module is the same every build.
#include <algorithm>
#include <cstring>

#include "check.h"
#include "cpu.h"
#include "threading.h"

namespace fastnn::bind {

std::vector<std::pair<const char*, RegisterFn>>& registry() {
  static std::vector<std::pair<const char*, RegisterFn>> families;
  return families;
}

}  // namespace fastnn::bind

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  namespace fb = fastnn::bind;
  m.doc() = "fastnn's C++ kernels (private: use the fastnn package)";

  m.def("set_num_threads", [](int n) {
    if (n < 1) fb::fail("set_num_threads", "n must be >= 1, got " + std::to_string(n));
    fastnn::set_num_threads(n);
  }, py::arg("n"));
  m.def("get_num_threads", &fastnn::get_num_threads);
  m.def("openmp_enabled", &fastnn::openmp_enabled);
  m.def("kernel_isa", &fastnn::kernel_isa);

  auto families = fb::registry();
  std::sort(families.begin(), families.end(),
            [](const auto& x, const auto& y) { return std::strcmp(x.first, y.first) < 0; });
  for (const auto& family : families) family.second(m);
}

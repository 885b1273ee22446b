// Argument checking shared by the binding files.
//
// Bindings take numpy arrays as they are (no silent casts or copies), check dtype, layout and
// shape here, and throw std::invalid_argument (Python ValueError) or pybind11::type_error
// (Python TypeError) with a message that names the operation and the shapes involved.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastnn::bind {

namespace py = pybind11;

enum class DType { f32, f64 };

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    if (d) s += ", ";
    s += std::to_string(a.shape(d));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t d = 0; d < shape.size(); ++d) {
    if (d) s += ", ";
    s += shape[d] < 0 ? std::string("*") : std::to_string(shape[d]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

[[noreturn]] inline void fail(const std::string& op, const std::string& message) {
  throw std::invalid_argument("fastnn." + op + ": " + message);
}

[[noreturn]] inline void fail_type(const std::string& op, const std::string& message) {
  throw py::type_error("fastnn." + op + ": " + message);
}

inline std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Compares dtypes by value: arrays restored by pickle carry dtype objects that are equal to, but
// not the same object as, numpy's canonical ones.
template <class T>
bool is_native(const py::array& a) {
  const py::dtype dt = a.dtype();
  return dt.kind() == 'f' && dt.itemsize() == static_cast<py::ssize_t>(sizeof(T)) &&
         (dt.byteorder() == '=' || dt.byteorder() == '|' ||
          dt.byteorder() == py::dtype::of<T>().byteorder());
}

// float32 or float64, C-contiguous; anything else is refused rather than silently copied.
inline DType float_array(const std::string& op, const char* name, const py::array& a) {
  DType dt;
  if (is_native<float>(a)) {
    dt = DType::f32;
  } else if (is_native<double>(a)) {
    dt = DType::f64;
  } else {
    // A float32/float64 that failed is in the other byte order.
    const bool swapped = a.dtype().kind() == 'f' && (a.itemsize() == 4 || a.itemsize() == 8);
    fail_type(op, std::string(name) + " must be float32 or float64, got " + dtype_str(a) +
                      (swapped ? " in non-native byte order" : ""));
  }
  if (!(a.flags() & py::array::c_style)) {
    fail(op, std::string(name) + " with shape " + shape_str(a) +
                 " must be C-contiguous (use numpy.ascontiguousarray)");
  }
  return dt;
}

inline void same_dtype(const std::string& op, const char* name, const py::array& a,
                       const char* ref_name, const py::array& ref) {
  if (a.dtype().kind() != ref.dtype().kind() || a.dtype().itemsize() != ref.dtype().itemsize()) {
    fail_type(op, std::string(name) + " has dtype " + dtype_str(a) + " but " + ref_name +
                      " has dtype " + dtype_str(ref) + "; they must match");
  }
}

// Checks a float array of the same dtype as `ref` (pass ref == a for the first one).
inline void float_like(const std::string& op, const char* name, const py::array& a,
                       const char* ref_name, const py::array& ref) {
  float_array(op, name, a);
  same_dtype(op, name, a, ref_name, ref);
}

inline void writable(const std::string& op, const char* name, const py::array& a) {
  if (!a.writeable()) fail(op, std::string(name) + " is read-only but is written to");
}

inline void ndim(const std::string& op, const char* name, const py::array& a, int expected) {
  if (a.ndim() != expected) {
    fail(op, std::string(name) + " must be " + std::to_string(expected) + "-D, got shape " +
                 shape_str(a));
  }
}

// expected[d] < 0 means "any size".
inline void shape(const std::string& op, const char* name, const py::array& a,
                  const std::vector<int64_t>& expected) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(expected.size());
  for (size_t d = 0; ok && d < expected.size(); ++d) {
    ok = expected[d] < 0 || a.shape(d) == expected[d];
  }
  if (!ok) {
    fail(op, std::string(name) + " has shape " + shape_str(a) + ", expected " +
                 shape_str(expected));
  }
}

inline void same_shape(const std::string& op, const char* name, const py::array& a,
                       const char* ref_name, const py::array& ref) {
  bool ok = a.ndim() == ref.ndim();
  for (py::ssize_t d = 0; ok && d < a.ndim(); ++d) ok = a.shape(d) == ref.shape(d);
  if (!ok) {
    fail(op, std::string(name) + " has shape " + shape_str(a) + " but " + ref_name +
                 " has shape " + shape_str(ref) + "; they must match");
  }
}

// Outputs must not overlap inputs a kernel still reads after writing.
inline void no_overlap(const std::string& op, const char* out_name, const py::array& out,
                       const char* in_name, const py::array& in) {
  const auto* o = static_cast<const char*>(out.data());
  const auto* i = static_cast<const char*>(in.data());
  const py::ssize_t ob = out.nbytes(), ib = in.nbytes();
  if (ob && ib && o < i + ib && i < o + ob) {
    fail(op, std::string(out_name) + " overlaps " + in_name + " in memory; pass a separate array");
  }
}

// An output may be the very same array as an input that a kernel reads element by element (or
// row by row before writing the row), but a partial overlap would be read after being written.
inline void same_or_disjoint(const std::string& op, const char* out_name, const py::array& out,
                             const char* in_name, const py::array& in) {
  if (out.data() == in.data() && out.nbytes() == in.nbytes()) return;
  no_overlap(op, out_name, out, in_name, in);
}

// Size options (stride, padding, ...): an int or a sequence of one of the allowed `counts` of
// ints, each >= lo; a single int is repeated counts.front() times.
inline std::vector<int64_t> int_tuple(const std::string& op, const char* name,
                                      const py::object& v, const std::vector<size_t>& counts,
                                      int64_t lo) {
  std::vector<int64_t> out;
  const std::string ints = counts.size() == 1 && counts[0] == 2 ? "a pair" : "a tuple";
  if (py::isinstance<py::bool_>(v)) {
    fail_type(op, std::string(name) + " must be an int or " + ints + " of ints, got a bool");
  }
  if (py::isinstance<py::int_>(v)) {
    out.assign(counts.front(), v.cast<int64_t>());
  } else if (py::isinstance<py::sequence>(v) && !py::isinstance<py::str>(v)) {
    for (const auto& e : v.cast<py::sequence>()) {
      if (!py::isinstance<py::int_>(e) || py::isinstance<py::bool_>(e)) {
        fail_type(op, std::string(name) + " must hold ints, got " +
                          py::repr(v).cast<std::string>());
      }
      out.push_back(e.cast<int64_t>());
    }
    bool ok = false;
    for (size_t c : counts) ok = ok || out.size() == c;
    if (!ok) {
      std::string allowed;
      for (size_t i = 0; i < counts.size(); ++i) {
        allowed += (i ? " or " : "") + std::to_string(counts[i]);
      }
      fail(op, std::string(name) + " must have " + allowed + " values, got " +
                   py::repr(v).cast<std::string>());
    }
  } else {
    fail_type(op, std::string(name) + " must be an int or " + ints + " of ints, got " +
                      py::repr(v).cast<std::string>());
  }
  for (int64_t e : out) {
    if (e < lo) {
      fail(op, std::string(name) + " values must be >= " + std::to_string(lo) + ", got " +
                   py::repr(v).cast<std::string>());
    }
  }
  return out;
}

inline std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

template <class T>
T* mut(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}

template <class T>
const T* ptr(const py::array& a) {
  return static_cast<const T*>(a.data());
}

// Calls f(T{}) with T = float or double.
template <class F>
decltype(auto) dispatch(DType dt, F&& f) {
  if (dt == DType::f32) return f(float{});
  return f(double{});
}

// Each binding file registers its functions with a static Registrar, so adding a kernel
// family never touches a central list.
using RegisterFn = void (*)(py::module_&);
std::vector<std::pair<const char*, RegisterFn>>& registry();

struct Registrar {
  Registrar(const char* family, RegisterFn fn) { registry().emplace_back(family, fn); }
};

}  // namespace fastnn::bind

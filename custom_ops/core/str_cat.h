// Error messages of the framework-free code (no absl::StrCat there): every
// argument streamed in order.
#ifndef TF_SAMPLED_CORE_STR_CAT_H_
#define TF_SAMPLED_CORE_STR_CAT_H_

#include <sstream>
#include <string>

namespace tf_sampled {

template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

}  // namespace tf_sampled

#endif  // TF_SAMPLED_CORE_STR_CAT_H_

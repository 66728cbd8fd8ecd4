#include "server/h2_response_body.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace fa {

H2ResponseBody::~H2ResponseBody() {
  if (file_fd_ >= 0) ::close(file_fd_);
}

void H2ResponseBody::set_file(int fd, std::uint64_t offset, std::uint64_t size) {
  file_fd_ = fd;
  file_offset_ = offset;
  file_remaining_ = size;
}

void H2ResponseBody::add_trailer(std::string name, std::string_view value) {
  trailer_fields_.push_back(std::move(name));
  trailer_fields_.emplace_back(value);
}

std::int64_t H2ResponseBody::read(std::uint8_t* buf, std::size_t length, bool* end, bool* file_done) {
  *end = false;
  *file_done = false;
  if (file_fd_ >= 0) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(length, file_remaining_));
    ssize_t n;
    do {
      n = ::pread(file_fd_, buf, want, static_cast<off_t>(file_offset_));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return kFailed;
    file_offset_ += static_cast<std::uint64_t>(n);
    file_remaining_ -= static_cast<std::uint64_t>(n);
    if (file_remaining_ == 0) {
      ::close(file_fd_);
      file_fd_ = -1;
      *end = *file_done = true;
    }
    return n;
  }
  const std::size_t avail = buffered();
  if (avail == 0) {
    if (ends_here()) {
      *end = true;
      return 0;
    }
    deferred_ = true;  // more body, or the trailers, still to come
    return kWaiting;
  }
  const std::size_t n = std::min(length, avail);
  std::memcpy(buf, data_.data() + offset_, n);
  offset_ += n;
  if (offset_ == data_.size()) {
    data_.clear();
    offset_ = 0;
  } else if (offset_ >= 64 * 1024 && offset_ * 2 >= data_.size()) {
    data_.erase(0, offset_);
    offset_ = 0;
  }
  *end = ends_here();
  return static_cast<std::int64_t>(n);
}

}  // namespace fa

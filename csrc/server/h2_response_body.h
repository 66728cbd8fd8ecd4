// H2ResponseBody: what one HTTP/2 response still has to send after its head: body bytes buffered here or a file,
// then, when the response announced them, its trailers. nghttp2 pulls from it (H2Stream::read_body) as fast as the
// peer's flow-control window and the connection's output allow; nothing here calls nghttp2.
//
// Ownership: the stream owns its body; the body owns the file descriptor it was given (closed when the file is out
// or the body is destroyed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fa {

class H2ResponseBody {
 public:
  H2ResponseBody() = default;
  ~H2ResponseBody();
  H2ResponseBody(const H2ResponseBody&) = delete;
  H2ResponseBody& operator=(const H2ResponseBody&) = delete;

  // Body bytes buffered and not yet framed.
  std::size_t buffered() const { return data_.size() - offset_; }
  void append(const char* data, std::size_t len) { data_.append(data, len); }
  void assign(std::string_view data) {
    data_.assign(data);
    offset_ = 0;
  }
  // The body is `size` bytes of `fd` from `offset` (the body takes the descriptor).
  void set_file(int fd, std::uint64_t offset, std::uint64_t size);
  bool has_file() const { return file_fd_ >= 0; }

  // The last body bytes were written (or the file given): nothing more comes from the app but trailers.
  bool complete() const { return complete_; }
  void set_complete() { complete_ = true; }
  // nghttp2 has the whole response: its last DATA frame is made (or there is no body).
  bool framed() const { return framed_; }
  void set_framed(bool framed) { framed_ = framed; }

  // Trailers (ASGI http.response.trailers): announced with the head, complete later; the last DATA frame waits.
  bool trailers_expected() const { return trailers_expected_; }
  void expect_trailers() { trailers_expected_ = true; }
  bool trailers_ready() const { return trailers_ready_; }
  void set_trailers_ready() { trailers_ready_ = true; }
  // One trailer field, its name already lowercase.
  void add_trailer(std::string name, std::string_view value);
  // The trailer fields, name, value, name, ... (for nghttp2_submit_trailer, which copies them); then cleared.
  std::vector<std::string>& trailer_fields() { return trailer_fields_; }

  // nghttp2's data source: up to `length` bytes into `buf`. Returns the bytes copied (>= 0), kWaiting when more body
  // (or the trailers) is still to come from the app, or kFailed when the file cannot be read (an error, or it
  // shrank). *end: the body ends with these bytes. *file_done: the file went out completely with them.
  static constexpr std::int64_t kWaiting = -1;
  static constexpr std::int64_t kFailed = -2;
  std::int64_t read(std::uint8_t* buf, std::size_t length, bool* end, bool* file_done);
  // Waiting for the app (read() returned kWaiting): the stream must resume its data when more arrives.
  bool deferred() const { return deferred_; }
  void clear_deferred() { deferred_ = false; }

 private:
  bool ends_here() const { return complete_ && buffered() == 0 && (!trailers_expected_ || trailers_ready_); }

  std::string data_;
  std::size_t offset_ = 0;  // bytes of data_ already framed
  int file_fd_ = -1;
  std::uint64_t file_offset_ = 0;
  std::uint64_t file_remaining_ = 0;
  bool complete_ = false;
  bool framed_ = false;
  bool deferred_ = false;
  bool trailers_expected_ = false;
  bool trailers_ready_ = false;
  std::vector<std::string> trailer_fields_;  // name, value, ...
};

}  // namespace fa

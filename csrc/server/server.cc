#include "server/server.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "core/uv_api.h"
#include "server/connection.h"

namespace fa {

namespace {
std::atomic<std::int64_t> g_live_handles{0};
}

std::int64_t live_handles() { return g_live_handles.load(); }
void live_handles_add(int delta) { g_live_handles.fetch_add(delta); }

std::uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

Server::Server(uv_loop_t* loop, AppHandler* handler, ServerConfig config)
    : loop_(loop), handler_(handler), config_(std::move(config)),
      read_buf_(static_cast<char*>(std::malloc(kReadBufferSize))) {
  if (config_.tls != nullptr) {
    tls_in_buf_.reset(new char[kTlsBufferSize]);
    tls_out_buf_.reset(new char[kTlsBufferSize]);
  }
}

Server::~Server() {
  close_cork_handle();
  std::free(read_buf_);
}

void Server::cork(Transport* c) {
  if (cork_handle_ == nullptr) {
    cork_handle_ = new uv_prepare_t();
    uv.uv_prepare_init(loop_, cork_handle_);
    cork_handle_->data = this;
    live_handles_add(1);
  }
  corked_.push_back(c);
  if (!cork_active_) {
    uv.uv_prepare_start(cork_handle_, &Server::on_prepare);
    cork_active_ = true;
  }
}

void Server::uncork(Transport* c) {
  for (Transport*& p : corked_)
    if (p == c) p = nullptr;
  for (Transport*& p : flushing_)
    if (p == c) p = nullptr;
}

void Server::on_prepare(uv_prepare_t* p) {
  auto* self = static_cast<Server*>(p->data);
  CallbackScope scope(self->handler_);
  self->flushing_.swap(self->corked_);  // both keep their capacity: no allocation per turn
  for (std::size_t i = 0; i < self->flushing_.size(); ++i) {
    Transport* t = self->flushing_[i];
    if (t == nullptr) continue;
    t->corked_ = false;
    if (!t->closing()) t->listener_->on_transport_flush_due();
  }
  self->flushing_.clear();
  if (self->corked_.empty()) {
    uv.uv_prepare_stop(self->cork_handle_);
    self->cork_active_ = false;
  }
}

void Server::close_cork_handle() {
  if (cork_handle_ == nullptr) return;
  uv.uv_prepare_stop(cork_handle_);
  cork_active_ = false;
  cork_handle_->data = nullptr;
  uv.uv_close(reinterpret_cast<uv_handle_t*>(cork_handle_), [](uv_handle_t* h) {
    live_handles_add(-1);
    delete reinterpret_cast<uv_prepare_t*>(h);
  });
  cork_handle_ = nullptr;
  corked_.clear();
  flushing_.clear();
}

std::string Server::listen_fd(int fd, int backlog) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return std::string("getsockname failed: ") + std::strerror(errno);
  const bool tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
  if (!tcp && ss.ss_family != AF_UNIX) return "unsupported socket family";
  const int dup_fd = dup(fd);
  if (dup_fd < 0) return std::string("dup failed: ") + std::strerror(errno);
  auto* l = new Listener();
  l->server = this;
  l->tcp = tcp;
  if (!tcp) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(&ss);
    const std::size_t max = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
    if (max > 0 && un->sun_path[0] != '\0') l->unix_path.assign(un->sun_path, strnlen(un->sun_path, max));
  }
  int rc = tcp ? uv.uv_tcp_init(loop_, &l->io.tcp) : uv.uv_pipe_init(loop_, &l->io.pipe, 0);
  if (rc != 0) {
    ::close(dup_fd);
    delete l;
    return std::string("cannot create listener: ") + uv.uv_strerror(rc);
  }
  l->io.handle.data = l;
  live_handles_add(1);
  rc = tcp ? uv.uv_tcp_open(&l->io.tcp, dup_fd) : uv.uv_pipe_open(&l->io.pipe, dup_fd);
  if (rc == 0) rc = uv.uv_listen(&l->io.stream, backlog, &Server::on_connection);
  if (rc != 0) {
    uv.uv_close(&l->io.handle, &Server::on_listener_closed);
    return std::string("cannot listen: ") + uv.uv_strerror(rc);
  }
  listeners_.push_back(l);
  return {};
}

void Server::on_connection(uv_stream_t* listener, int status) {
  auto* l = static_cast<Listener*>(listener->data);
  Server* self = l->server;
  if (status < 0) return;
  CallbackScope scope(self->handler_);
  Connection* c = nullptr;
  try {
    c = new Connection(self, l->tcp);
  } catch (...) {
    return;  // out of memory: leave the connection in the backlog
  }
  if (c->accept_from(listener) && !l->tcp) c->transport_.set_local_host(l->unix_path);
}

void Server::on_listener_closed(uv_handle_t* h) {
  live_handles_add(-1);
  delete static_cast<Listener*>(h->data);
}

void Server::stop_accepting() {
  for (Listener* l : listeners_) uv.uv_close(&l->io.handle, &Server::on_listener_closed);
  listeners_.clear();
}

void Server::shutdown() {
  shutting_down_ = true;
  stop_accepting();
  for (Connection* c = connections_; c != nullptr;) {
    Connection* next = c->next;  // close_when_idle() may unlink c only from a later close callback; safe
    c->close_when_idle();
    c = next;
  }
}

void Server::close_all() {
  shutting_down_ = true;
  stop_accepting();
  for (Connection* c = connections_; c != nullptr; c = c->next) c->close();
  close_cork_handle();
}

std::string Server::add_route(std::string_view method, std::string_view pattern, NativeRoute route) {
  std::string err = router_.add(method, pattern, std::move(route));
  if (err.empty()) route_stats_.resize(router_.routes().size());
  return err;
}

void Server::link(Connection* c) {
  c->next = connections_;
  if (connections_ != nullptr) connections_->prev = c;
  connections_ = c;
  connection_count_++;
}

void Server::unlink(Connection* c) {
  if (c->prev != nullptr) c->prev->next = c->next;
  else connections_ = c->next;
  if (c->next != nullptr) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
  connection_count_--;
}

}  // namespace fa

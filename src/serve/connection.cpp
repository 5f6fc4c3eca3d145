#include "serve/connection.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace oboro::serve {

namespace {
// Address and port of a sockaddr (IPv4 or IPv6), "" for other families.
std::string addr_of(const sockaddr_storage& ss, int& port) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    port = ntohs(a->sin_port);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    return buf;
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    port = ntohs(a->sin6_port);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    return buf;
  }
  port = -1;
  return "";
}
}  // namespace

int find_connection_fd(const std::string& remote_addr, int remote_port, int local_port) {
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const int fd = std::atoi(e.path().filename().c_str());
    std::error_code ec2;
    const std::string target = std::filesystem::read_symlink(e.path(), ec2).string();
    if (ec2 || target.rfind("socket:", 0) != 0) continue;
    sockaddr_storage peer{}, self{};
    socklen_t pl = sizeof peer, sl = sizeof self;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&self), &sl) != 0) continue;
    int pport = -1, sport = -1;
    const std::string paddr = addr_of(peer, pport);
    addr_of(self, sport);
    if (pport == remote_port && sport == local_port && paddr == remote_addr) return fd;
  }
  return -1;
}

int widen_listen_backlog(int port, int backlog) {
  int changed = 0;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const int fd = std::atoi(e.path().filename().c_str());
    std::error_code ec2;
    if (std::filesystem::read_symlink(e.path(), ec2).string().rfind("socket:", 0) != 0 || ec2) continue;
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage self{};
    socklen_t sl = sizeof self;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&self), &sl) != 0) continue;
    int sport = -1;
    addr_of(self, sport);
    if (sport == port && ::listen(fd, backlog) == 0) ++changed;
  }
  return changed;
}

bool peer_closed(int fd) {
  if (fd < 0) return false;
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
  return false;
}

}  // namespace oboro::serve

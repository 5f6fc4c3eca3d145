// Whether the client of a request is still there. httplib 0.11 gives a handler no socket, so the connection's
// socket is found by its addresses among the process's open sockets (getsockname/getpeername), and a closed peer
// is seen as an orderly end of stream (recv with MSG_PEEK returns 0) or a reset.
#pragma once
#include <string>

namespace oboro::serve {

// The file descriptor of the TCP connection local_port ↔ remote_addr:remote_port, or -1.
int find_connection_fd(const std::string& remote_addr, int remote_port, int local_port);
// True when the peer has closed (or reset) the connection; false while it is open or has unread data.
bool peer_closed(int fd);

// httplib 0.11 listens with a backlog of 5, so a burst of connections overflows the accept queue and clients see
// resets. Calls listen() again on the process's listening socket(s) bound to `port` with `backlog` (Linux updates
// the backlog of a listening socket). Returns how many sockets were changed.
int widen_listen_backlog(int port, int backlog);

}  // namespace oboro::serve

#include "autoconfig.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listener.h"
#include "log.h"

int listener_open(const struct endpoint *ep, bool defer, char *err, size_t errlen)
{
	int fd, one = 1, zero = 0, secs = LISTENER_DEFER_SECS;

	fd = socket(ep->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err_set_errno(err, errlen, "socket for %s", ep->text);
		return -1;
	}
	/* Accepted connections still hold the port after a previous instance closed its listener
	 * (draining): SO_REUSEADDR lets a new instance bind while they finish. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		goto fail_errno;
	/* A redirected connection arrives on the address of the interface it came in on, IPv4 or
	 * IPv6: one [::] socket must take both families whatever net.ipv6.bindv6only says. */
	if (ep->ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
		goto fail_errno;
	/* The relay passes on each message as it comes: no Nagle delay. Accepted sockets inherit
	 * it, which saves the workers a setsockopt per connection. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		goto fail_errno;
	/* A worker wakes once per connection, when the hello is there to read, instead of once
	 * for the handshake's last ACK and again for the hello. Until its first bytes come, a
	 * connection is a request socket of the listener, which closing the listener drops: the
	 * caller asks for this only when the grace period outlasts the deferral. */
	if (defer && setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs)) < 0)
		goto fail_errno;
	if (bind(fd, (const struct sockaddr *)&ep->ss, ep->len) < 0) {
		snprintf(err, errlen, "bind %s: %s%s", ep->text, strerror(errno),
		         errno == EADDRINUSE ? " (another program listens there: -listen)" : "");
		close(fd);
		return -1;
	}
	if (listen(fd, SOMAXCONN) < 0)
		goto fail_errno;
	return fd;
fail_errno:
	err_set_errno(err, errlen, "listener %s", ep->text);
	close(fd);
	return -1;
}

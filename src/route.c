/* -transparent's policy routing through rtnetlink (libmnl): see route.h.
 *
 * Why a table of its own with a local default route: a packet is delivered to a local socket
 * only when routing says its destination is local. The web server's reply to a visitor's
 * address is routed like any outgoing packet; in our table every destination is local, so the
 * reply loops back through lo and reaches the proxy's transparent socket bound to that address.
 * Only replies that the two rules select go there: those from loopback (a web server on
 * 127.0.0.1/::1, where nothing else could be a valid source of a packet to another host), and
 * those carrying ROUTE_MARK (a web server on one of the host's addresses, whose replies to
 * direct visitors must leave the host as before).
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>

#include "firewall.h"
#include "log.h"
#include "route.h"

#define ROUTE_MAX_DEL 64 /* entries one route_clear pass deletes (we make six) */

/* Whether the instance pid is gone: no such process, or one that is not an instance (its pid
 * reused after a crash). Same test as the firewall rules' (firewall_iptc.c). */
static bool rt_pid_gone(pid_t pid)
{
	char path[64], comm[32];
	ssize_t n;
	int fd;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT;
	n = read(fd, comm, sizeof(comm) - 1);
	close(fd);
	if (n <= 0)
		return false;
	comm[n] = '\0';
	comm[strcspn(comm, "\n")] = '\0';
	return strcmp(comm, FW_OWNER_NAME) != 0;
}

static uint32_t rt_own_table(void)
{
	return ROUTE_TABLE_BASE + (uint32_t)getpid();
}

/* Whether a rule or route in table belongs to the set being cleared. */
static bool rt_selected(uint32_t table, int proto, enum route_which which)
{
	if (proto != ROUTE_PROTO || table < ROUTE_TABLE_BASE ||
	    table > ROUTE_TABLE_BASE + ROUTE_PID_MAX)
		return false;
	if (which == ROUTE_OWN)
		return table == rt_own_table();
	return table != rt_own_table() && rt_pid_gone((pid_t)(table - ROUTE_TABLE_BASE));
}

struct rt_req {
	struct mnl_socket *nl;
	unsigned seq;
	unsigned portid;
	char buf[32768]; /* a dump part: at most 32 KiB (libmnl's MNL_SOCKET_DUMP_SIZE) */
};

static int rt_open(struct rt_req *r, char *err, size_t errlen)
{
	r->nl = mnl_socket_open(NETLINK_ROUTE);
	if (r->nl == NULL || mnl_socket_bind(r->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		err_set_errno(err, errlen, "rtnetlink socket");
		if (r->nl != NULL)
			mnl_socket_close(r->nl);
		r->nl = NULL;
		return -1;
	}
	r->portid = mnl_socket_get_portid(r->nl);
	r->seq = (unsigned)time(NULL);
	return 0;
}

/* Send nlh and read the answer: callback for each message of a dump, or the ACK. Returns 0 or
 * -1 with errno (the kernel's error). */
static int rt_talk(struct rt_req *r, struct nlmsghdr *nlh, mnl_cb_t cb, void *data)
{
	ssize_t n;
	int rc;

	nlh->nlmsg_seq = ++r->seq;
	if (mnl_socket_sendto(r->nl, nlh, nlh->nlmsg_len) < 0)
		return -1;
	do {
		n = mnl_socket_recvfrom(r->nl, r->buf, sizeof(r->buf));
		if (n < 0)
			return -1;
		rc = mnl_cb_run(r->buf, (size_t)n, r->seq, r->portid, cb, data);
	} while (rc > 0);
	return rc < 0 ? -1 : 0;
}

/* ---- building the rules and routes ---------------------------------------------------------- */

/* kind 0: from loopback iif lo; kind 1: fwmark ROUTE_MARK. */
static struct nlmsghdr *rt_rule_msg(char *buf, int type, int family, int kind)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct fib_rule_hdr *frh;

	nlh->nlmsg_type = (uint16_t)type;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK |
	                   (type == RTM_NEWRULE ? NLM_F_CREATE | NLM_F_EXCL : 0);
	frh = mnl_nlmsg_put_extra_header(nlh, sizeof(*frh));
	frh->family = (uint8_t)family;
	frh->action = FR_ACT_TO_TBL;
	frh->table = RT_TABLE_UNSPEC;
	mnl_attr_put_u32(nlh, FRA_TABLE, rt_own_table());
	mnl_attr_put_u32(nlh, FRA_PRIORITY, ROUTE_PRIO + (unsigned)kind);
	mnl_attr_put_u8(nlh, FRA_PROTOCOL, ROUTE_PROTO);
	if (kind == 0) {
		if (family == AF_INET) {
			struct in_addr a = { htonl(INADDR_LOOPBACK & 0xff000000u) };

			frh->src_len = 8;
			mnl_attr_put(nlh, FRA_SRC, sizeof(a), &a);
		} else {
			frh->src_len = 128;
			mnl_attr_put(nlh, FRA_SRC, sizeof(in6addr_loopback), &in6addr_loopback);
		}
		mnl_attr_put_strz(nlh, FRA_IIFNAME, "lo");
	} else {
		mnl_attr_put_u32(nlh, FRA_FWMARK, ROUTE_MARK);
		mnl_attr_put_u32(nlh, FRA_FWMASK, 0xffffffffu);
	}
	return nlh;
}

static struct nlmsghdr *rt_route_msg(char *buf, int family, unsigned lo)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct rtmsg *rtm;

	nlh->nlmsg_type = RTM_NEWROUTE;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
	rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = (uint8_t)family;
	rtm->rtm_dst_len = 0;
	rtm->rtm_table = RT_TABLE_UNSPEC;
	rtm->rtm_protocol = ROUTE_PROTO;
	rtm->rtm_scope = RT_SCOPE_HOST;
	rtm->rtm_type = RTN_LOCAL;
	mnl_attr_put_u32(nlh, RTA_TABLE, rt_own_table());
	mnl_attr_put_u32(nlh, RTA_OIF, lo);
	return nlh;
}

/* ---- finding ours --------------------------------------------------------------------------- */

struct rt_found {
	enum route_which which;
	size_t n;
	bool overflow;
	struct { char msg[512]; size_t len; } del[ROUTE_MAX_DEL];
};

static void rt_keep(struct rt_found *f, const struct nlmsghdr *nlh)
{
	if (f->n == ROUTE_MAX_DEL || nlh->nlmsg_len > sizeof(f->del[0].msg)) {
		f->overflow = true;
		return;
	}
	memcpy(f->del[f->n].msg, nlh, nlh->nlmsg_len);
	f->del[f->n].len = nlh->nlmsg_len;
	f->n++;
}

struct rt_attrs {
	uint32_t table;
	int proto;
};

static int rt_rule_attr(const struct nlattr *a, void *data)
{
	struct rt_attrs *ra = data;

	if (mnl_attr_get_type(a) == FRA_TABLE && mnl_attr_validate(a, MNL_TYPE_U32) == 0)
		ra->table = mnl_attr_get_u32(a);
	else if (mnl_attr_get_type(a) == FRA_PROTOCOL && mnl_attr_validate(a, MNL_TYPE_U8) == 0)
		ra->proto = mnl_attr_get_u8(a);
	return MNL_CB_OK;
}

static int rt_rule_cb(const struct nlmsghdr *nlh, void *data)
{
	const struct fib_rule_hdr *frh = mnl_nlmsg_get_payload(nlh);
	struct rt_attrs ra = { frh->table, -1 };

	mnl_attr_parse(nlh, sizeof(*frh), rt_rule_attr, &ra);
	if (rt_selected(ra.table, ra.proto, ((struct rt_found *)data)->which))
		rt_keep(data, nlh);
	return MNL_CB_OK;
}

static int rt_route_attr(const struct nlattr *a, void *data)
{
	struct rt_attrs *ra = data;

	if (mnl_attr_get_type(a) == RTA_TABLE && mnl_attr_validate(a, MNL_TYPE_U32) == 0)
		ra->table = mnl_attr_get_u32(a);
	return MNL_CB_OK;
}

static int rt_route_cb(const struct nlmsghdr *nlh, void *data)
{
	const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
	struct rt_attrs ra = { rtm->rtm_table, rtm->rtm_protocol };

	mnl_attr_parse(nlh, sizeof(*rtm), rt_route_attr, &ra);
	if (rt_selected(ra.table, ra.proto, ((struct rt_found *)data)->which))
		rt_keep(data, nlh);
	return MNL_CB_OK;
}

/* Dump the rules (rules true) or routes of family and delete ours. */
static int rt_clear_one(struct rt_req *r, enum route_which which, int family, bool rules,
                        unsigned *count, char *err, size_t errlen)
{
	struct rt_found *f = calloc(1, sizeof(*f));
	struct nlmsghdr *nlh;
	const char *what = rules ? "rule" : "route";
	int rc = -1;

	if (f == NULL) {
		snprintf(err, errlen, "out of memory clearing the policy routing %ss", what);
		return -1;
	}
	f->which = which;
	nlh = mnl_nlmsg_put_header(r->buf);
	nlh->nlmsg_type = rules ? RTM_GETRULE : RTM_GETROUTE;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	if (rules) {
		struct fib_rule_hdr *frh = mnl_nlmsg_put_extra_header(nlh, sizeof(*frh));

		frh->family = (uint8_t)family;
	} else {
		struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));

		rtm->rtm_family = (uint8_t)family;
	}
	if (rt_talk(r, nlh, rules ? rt_rule_cb : rt_route_cb, f) < 0) {
		err_set_errno(err, errlen, "listing the IPv%c %ss", family == AF_INET ? '4' : '6',
		              what);
		goto out;
	}
	for (size_t i = 0; i < f->n; i++) {
		nlh = (struct nlmsghdr *)(void *)f->del[i].msg;
		nlh->nlmsg_type = rules ? RTM_DELRULE : RTM_DELROUTE;
		nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
		nlh->nlmsg_pid = 0;
		if (rt_talk(r, nlh, NULL, NULL) < 0 && errno != ENOENT && errno != ESRCH) {
			err_set_errno(err, errlen, "deleting an IPv%c %s of table %u",
			              family == AF_INET ? '4' : '6', what, rt_own_table());
			goto out;
		}
		(*count)++;
	}
	if (f->overflow) {
		snprintf(err, errlen, "more than %d IPv%c %ss of acme-alpn-proxy tables tagged "
		         "proto %d: not ours alone?", ROUTE_MAX_DEL, family == AF_INET ? '4' : '6',
		         what, ROUTE_PROTO);
		goto out;
	}
	rc = 0;
out:
	free(f);
	return rc;
}

static int rt_clear(struct rt_req *r, enum route_which which, unsigned *n, char *err,
                    size_t errlen)
{
	static const int fams[] = { AF_INET, AF_INET6 };
	unsigned count = 0;

	for (size_t i = 0; i < 2; i++) {
		if (rt_clear_one(r, which, fams[i], true, &count, err, errlen) < 0 ||
		    rt_clear_one(r, which, fams[i], false, &count, err, errlen) < 0)
			return -1;
	}
	if (n != NULL)
		*n = count;
	return 0;
}

int route_clear(enum route_which which, unsigned *n, char *err, size_t errlen)
{
	struct rt_req *r = calloc(1, sizeof(*r));
	int rc;

	if (r == NULL) {
		snprintf(err, errlen, "out of memory for an rtnetlink request");
		return -1;
	}
	rc = rt_open(r, err, errlen);
	if (rc == 0) {
		rc = rt_clear(r, which, n, err, errlen);
		mnl_socket_close(r->nl);
	}
	free(r);
	return rc;
}

int route_install(int families, char *err, size_t errlen)
{
	struct rt_req *r = calloc(1, sizeof(*r));
	char msg[512], cerr[256];
	unsigned lo = if_nametoindex("lo");
	int rc = -1;

	if (r == NULL) {
		snprintf(err, errlen, "out of memory for an rtnetlink request");
		return -1;
	}
	if (lo == 0) {
		err_set_errno(err, errlen, "-transparent: no loopback interface \"lo\"");
		free(r);
		return -1;
	}
	if (rt_open(r, err, errlen) < 0) {
		free(r);
		return -1;
	}
	if (rt_clear(r, ROUTE_STALE, NULL, err, errlen) < 0 ||
	    rt_clear(r, ROUTE_OWN, NULL, err, errlen) < 0)
		goto out;
	for (int v = 0; v < 2; v++) {
		int fam = v == 0 ? AF_INET : AF_INET6;
		const char *ip = v == 0 ? "" : " -6";

		if (!(families & (v == 0 ? FW_V4 : FW_V6)))
			continue;
		if (rt_talk(r, rt_route_msg(msg, fam, lo), NULL, NULL) < 0) {
			err_set_errno(err, errlen, "-transparent: adding `ip%s route add local %s dev lo "
			              "table %u`", ip, v == 0 ? "0.0.0.0/0" : "::/0", rt_own_table());
			goto undo;
		}
		for (int kind = 0; kind < 2; kind++) {
			int rc2 = rt_talk(r, rt_rule_msg(msg, RTM_NEWRULE, fam, kind), NULL, NULL);
#ifdef ENABLE_TEST_HOOKS
			/* Test builds only: the last rule refused, as by a kernel without IPv6
			 * policy routing, after everything before it went in. */
			if (rc2 == 0 && v == 1 && kind == 1 && getenv("ACME_ALPN_PROXY_TEST_HOOK") &&
			    strcmp(getenv("ACME_ALPN_PROXY_TEST_HOOK"), "route-fail") == 0) {
				errno = EAFNOSUPPORT;
				rc2 = -1;
			}
#endif
			if (rc2 < 0) {
				snprintf(err, errlen, "-transparent: adding `ip%s rule add %s lookup "
				         "%u`: %s%s", ip, kind == 0 ? (v == 0 ? "from 127.0.0.0/8 "
				         "iif lo" : "from ::1/128 iif lo") : "fwmark", rt_own_table(),
				         strerror(errno), errno == EAFNOSUPPORT || errno == EOPNOTSUPP
				         ? " (a kernel without policy routing, CONFIG_IP_MULTIPLE_TABLES "
				         "or CONFIG_IPV6_MULTIPLE_TABLES?)" : "");
				goto undo;
			}
		}
	}
	rc = 0;
	goto out;
undo:
	if (rt_clear(r, ROUTE_OWN, NULL, cerr, sizeof(cerr)) < 0) {
		size_t l = strlen(err);

		snprintf(err + l, errlen - l, "; undoing it failed too: %s", cerr);
	}
out:
	mnl_socket_close(r->nl);
	free(r);
	return rc;
}

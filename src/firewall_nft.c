/* The REDIRECT rule in an nftables table owned by this process (-firewall nftables), through
 * libnftnl and libmnl.
 *
 * One table per process: `table inet acme_alpn_proxy_<pid> { flags owner; chain prerouting
 * { type nat hook prerouting priority -110; REDIRECT rule; hold rule } }`. With
 * NFT_TABLE_F_OWNER (Linux 5.12) the table belongs to the netlink socket that created it:
 * nobody else may change or delete it (EPERM), `nft flush ruleset` leaves it alone, and the
 * kernel deletes it when that socket closes, also when the process is killed. A crash can
 * therefore never leave port 443 redirected to nothing. The socket (nft_nl) is opened by the
 * first fw_install, close-on-exec, and stays open for the process's life; workers forked later
 * close it with every other descriptor (worker.c, worker_fds), before their sandbox. A socket
 * inherited and kept open would keep the table alive after its owner: never pass it on.
 * NFT_TABLE_F_PERSIST (Linux 6.9, keep the table after the owner) is never set.
 *
 * Only the owner may change the table: fw_remove and fw_release act on this process's own table
 * only, and `stop` acts through the running instance (a signal). A second process can list the
 * tables (fw_count for `status`).
 *
 * The rules are those of the libiptc backend, written in nftables expressions:
 *   [meta nfproto ipv4|ipv6] [ip(6) saddr/daddr ...] [iifname ...] meta l4proto tcp
 *   [tcp dport 443] tcp flags & (fin|syn|rst|ack) == syn fib daddr type local counter
 *   redirect to :21443 comment "<comment>"
 *   ct state invalid counter comment "<comment> conntrack hold pid N"
 * One inet rule serves IPv4 and IPv6 (nat in the inet family: Linux 5.2). The chain's priority,
 * -110, is ahead of dstnat (-100): of several nat chains at one hook the first that translates
 * wins, so the administrator's own nat rules for 443 (nftables or legacy, both at -100) never
 * see a redirected SYN. The hold rule: in nftables as with x_tables, a nat chain emptied of its
 * redirect rule tracks nothing, and any rule with a ct expression switches tracking on; the
 * table keeps the hold from fw_remove to fw_release, which deletes the whole table. Everything
 * that goes in goes in one netlink batch: all or nothing.
 *
 * fw_clear_stale clears what a crashed libiptc instance left, through libiptc, without creating
 * the legacy table where it does not exist
 * (an owner table cannot be left behind). */
#include "autoconfig.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>

#include "firewall.h"
#include "firewall_ops.h"

#define NFT_TABLE_PREFIX "acme_alpn_proxy_"
#define NFT_CHAIN "prerouting"
#define NFT_PRIO (-110)          /* ahead of NF_IP_PRI_NAT_DST (-100, dstnat) */
/* nft(8) refuses comments longer than 128 bytes (NFT_COMMENT_MAXLEN, NUL included); the
 * kernel's limit is NFT_USERDATA_MAXLEN bytes of type-length-value records. */
#define NFT_COMMENT_MAX 128
#define NFT_HOLD_DEFAULT "acme-alpn-proxy"
#define NFT_HOLD_TAG " conntrack hold pid "
#define NFT_TCP_SYN_MASK 0x17    /* FIN|SYN|RST|ACK */
#define NFT_TCP_SYN 0x02
#define NFT_BUF 32768            /* a batch, or one read of a dump */
#define NFT_ACK_WAIT_MS 5000     /* the kernel answers a batch at once: this is a safety net */
#define NFT_MAX_MSGS 8           /* messages in one batch besides begin and end */
#define NFT_MAX_HANDLES 16       /* redirect rules one fw_remove deletes (there is one) */

_Static_assert(NFT_COMMENT_MAX <= RULESPEC_COMMENT_MAX, "a comment that fits fits nftables");
_Static_assert(NFT_COMMENT_MAX + 2 <= NFT_USERDATA_MAXLEN, "a comment fits the rule's userdata");

static struct mnl_socket *nft_nl; /* the owning socket: this process's table lives with it */
static uint32_t nft_seq;
static bool nft_have_table;       /* our table exists (installed, not yet released) */
static char nft_table[sizeof(NFT_TABLE_PREFIX) + 12];

static void nft_clear(char *buf, size_t len)
{
	if (len > 0)
		buf[0] = '\0';
}

/* ---- what can be said in nftables -------------------------------------------------------- */

int fw_nft_check(const struct rulespec *rs, char *err, size_t errlen)
{
	nft_clear(err, errlen);
	if (rs->has_comment && strlen(rs->comment) >= NFT_COMMENT_MAX) {
		fw_msg(err, errlen, "the comment is %zu bytes long; an nftables rule "
		        "(-firewall nftables) holds at most %d: shorten it, or use -firewall "
		        "iptables", strlen(rs->comment), NFT_COMMENT_MAX - 1);
		return -1;
	}
	if (rs->has_iface && rs->iface_invert && strcmp(rs->iface, "+") == 0) {
		fw_msg(err, errlen, "\"! -i +\" matches no packet at all and has no nftables "
		        "translation (-firewall nftables)");
		return -1;
	}
	return 0;
}

/* ---- the socket, batches, dumps ----------------------------------------------------------- */

static int nft_open(struct mnl_socket **out, char *err, size_t errlen)
{
	struct mnl_socket *nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
	int e;

	if (nl == NULL) {
		e = errno;
		fw_msg(err, errlen, "cannot open a netfilter netlink socket: %s%s", strerror(e),
		        e == EPROTONOSUPPORT || e == EAFNOSUPPORT
		        ? " (the kernel has no nfnetlink: CONFIG_NETFILTER_NETLINK)" : "");
		return -1;
	}
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		fw_msg(err, errlen, "cannot bind the netfilter netlink socket: %s", strerror(errno));
		mnl_socket_close(nl);
		return -1;
	}
	*out = nl;
	return 0;
}

/* Wait for the socket to be readable: -1 with ETIMEDOUT after ms. */
static ssize_t nft_recv(struct mnl_socket *nl, void *buf, size_t len, int ms)
{
	struct pollfd p = { .fd = mnl_socket_get_fd(nl), .events = POLLIN };
	int r;

	do
		r = poll(&p, 1, ms);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		errno = ETIMEDOUT;
	if (r <= 0)
		return -1;
	return mnl_socket_recvfrom(nl, buf, len);
}

/* Throw away what an earlier exchange left unread (answers that came after we stopped waiting):
 * a dump checks the sequence number of every message it reads. */
static void nft_drain(struct mnl_socket *nl)
{
	char buf[4096];

	while (recv(mnl_socket_get_fd(nl), buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

struct nft_batch {
	char buf[NFT_BUF];
	struct mnl_nlmsg_batch *b;
	uint32_t begin_seq;
	uint32_t seqs[NFT_MAX_MSGS];
	const char *what[NFT_MAX_MSGS]; /* for messages: "the table", "the redirect rule" */
	int n;
};

static void nft_batch_start(struct nft_batch *bt)
{
	struct nlmsghdr *nlh;

	bt->b = mnl_nlmsg_batch_start(bt->buf, sizeof(bt->buf));
	bt->n = 0;
	bt->begin_seq = ++nft_seq;
	nlh = nftnl_batch_begin(mnl_nlmsg_batch_current(bt->b), bt->begin_seq);
#ifdef ENABLE_TEST_HOOKS
	/* Test builds only: the batch addressed to a subsystem without transactions (ctnetlink),
	 * which the kernel refuses as it refuses nf_tables when the module is missing. */
	if (getenv("ACME_ALPN_PROXY_TEST_HOOK") != NULL &&
	    strcmp(getenv("ACME_ALPN_PROXY_TEST_HOOK"), "nft-no-nftables") == 0)
		((struct nfgenmsg *)mnl_nlmsg_get_payload(nlh))->res_id =
			htons(NFNL_SUBSYS_CTNETLINK);
#endif
	(void)nlh;
	mnl_nlmsg_batch_next(bt->b);
}

/* The header of the batch's next message; every one asks for an acknowledgement, so that the
 * answer of each can be told apart (and the reader knows when the kernel is done). */
static struct nlmsghdr *nft_batch_msg(struct nft_batch *bt, uint16_t type, uint16_t flags,
                                      const char *what)
{
	struct nlmsghdr *nlh;

	bt->seqs[bt->n] = ++nft_seq;
	bt->what[bt->n] = what;
	bt->n++;
	nlh = nftnl_nlmsg_build_hdr(mnl_nlmsg_batch_current(bt->b), type, NFPROTO_INET,
	                            flags | NLM_F_ACK, bt->seqs[bt->n - 1]);
	return nlh;
}

static void nft_batch_next(struct nft_batch *bt)
{
	mnl_nlmsg_batch_next(bt->b);
}

/* Send the batch and read the kernel's answer to each message. On failure *failed is the index
 * of the first message refused (-1: the batch as a whole, e.g. no nf_tables) and *ferr its
 * errno; the kernel then applied none of them. Returns 0 or -1. */
static int nft_batch_run(struct mnl_socket *nl, struct nft_batch *bt, int *failed, int *ferr,
                         char *err, size_t errlen)
{
	char rbuf[NFT_BUF];
	int acks = 0;
	bool bad = false;

	*failed = -2;
	*ferr = 0;
	nftnl_batch_end(mnl_nlmsg_batch_current(bt->b), ++nft_seq);
	mnl_nlmsg_batch_next(bt->b);
	nft_drain(nl);
	if (mnl_socket_sendto(nl, mnl_nlmsg_batch_head(bt->b), mnl_nlmsg_batch_size(bt->b)) < 0) {
		fw_msg(err, errlen, "cannot send to the kernel (netlink): %s", strerror(errno));
		mnl_nlmsg_batch_stop(bt->b);
		return -1;
	}
	mnl_nlmsg_batch_stop(bt->b);
	while (acks < bt->n) {
		/* After a refusal the kernel answers the rest at once, or not at all. */
		ssize_t len = nft_recv(nl, rbuf, sizeof(rbuf), bad ? 200 : NFT_ACK_WAIT_MS);
		const struct nlmsghdr *nlh = (const struct nlmsghdr *)rbuf;
		int left = (int)len;

		if (len < 0) {
			if (bad)
				break;
			fw_msg(err, errlen, "no answer from the kernel (netlink): %s", strerror(errno));
			return -1;
		}
		for (; mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left)) {
			const struct nlmsgerr *e;
			int i;

			if (nlh->nlmsg_type != NLMSG_ERROR ||
			    nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*e)))
				continue;
			e = mnl_nlmsg_get_payload(nlh);
			if (nlh->nlmsg_seq == bt->begin_seq) {
				/* The batch itself was refused: no message was looked at. */
				*failed = -1;
				*ferr = -e->error;
				return -1;
			}
			for (i = 0; i < bt->n && bt->seqs[i] != nlh->nlmsg_seq; i++)
				;
			if (i == bt->n)
				continue;
			acks++;
			if (e->error != 0 && !bad) {
				bad = true;
				*failed = i;
				*ferr = -e->error;
			}
		}
	}
	return bad ? -1 : 0;
}

static const char *nft_what(uint16_t type)
{
	return type == NFT_MSG_GETTABLE ? "tables" : type == NFT_MSG_GETCHAIN ? "chains" : "rules";
}

/* A dump (type NFT_MSG_GETTABLE or NFT_MSG_GETRULE, of one table or of all inet tables):
 * cb gets every object. "No such table" is an empty dump; so is a kernel without nf_tables
 * (nothing of ours can exist there). */
static int nft_dump_family(struct mnl_socket *nl, uint16_t type, uint16_t family,
                           const char *table, mnl_cb_t cb, void *data, char *err, size_t errlen)
{
	char buf[NFT_BUF];
	struct nlmsghdr *nlh;
	uint32_t seq = ++nft_seq, portid = mnl_socket_get_portid(nl);
	int r;

	nlh = nftnl_nlmsg_build_hdr(buf, type, family, NLM_F_DUMP, seq);
	if (table != NULL) {
		struct nftnl_rule *rq = nftnl_rule_alloc();

		if (rq == NULL) {
			fw_msg(err, errlen, "out of memory");
			return -1;
		}
		nftnl_rule_set_str(rq, NFTNL_RULE_TABLE, table);
		nftnl_rule_nlmsg_build_payload(nlh, rq);
		nftnl_rule_free(rq);
	}
	nft_drain(nl);
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
		fw_msg(err, errlen, "cannot ask the kernel for the nftables %s: %s",
		        nft_what(type), strerror(errno));
		return -1;
	}
	for (;;) {
		ssize_t len = nft_recv(nl, buf, sizeof(buf), NFT_ACK_WAIT_MS);

		if (len < 0) {
			fw_msg(err, errlen, "reading the nftables %s: %s",
			        nft_what(type), strerror(errno));
			return -1;
		}
		r = mnl_cb_run(buf, (size_t)len, seq, portid, cb, data);
		if (r == MNL_CB_STOP)
			return 0;
		if (r < 0) {
			if (errno == ENOENT || errno == EOPNOTSUPP)
				return 0;
			fw_msg(err, errlen, "reading the nftables %s: %s",
			        nft_what(type), strerror(errno));
			return -1;
		}
	}
}

static int nft_dump(struct mnl_socket *nl, uint16_t type, const char *table, mnl_cb_t cb,
                    void *data, char *err, size_t errlen)
{
	return nft_dump_family(nl, type, NFPROTO_INET, table, cb, data, err, errlen);
}

/* A socket for a look at the tables: ours when we have one, else a new one (*tmp). */
static struct mnl_socket *nft_reader(struct mnl_socket **tmp, char *err, size_t errlen)
{
	*tmp = NULL;
	if (nft_nl != NULL)
		return nft_nl;
	if (nft_open(tmp, err, errlen) < 0)
		return NULL;
	return *tmp;
}

/* The pid in a table name of ours, or 0 when the name is not one. */
static long nft_table_pid(const char *name)
{
	size_t plen = sizeof(NFT_TABLE_PREFIX) - 1, n;
	const char *digits = name + plen;

	if (strncmp(name, NFT_TABLE_PREFIX, plen) != 0)
		return 0;
	n = strspn(digits, "0123456789");
	if (n == 0 || n > 10 || digits[n] != '\0' || digits[0] == '0')
		return 0;
	return strtol(digits, NULL, 10) > INT_MAX ? 0 : strtol(digits, NULL, 10);
}

/* ---- rules -------------------------------------------------------------------------------- */

struct nft_rb {
	struct nftnl_rule *r;
	bool oom;
};

/* libnftnl's free functions take no NULL. */
static void nft_rule_drop(struct nftnl_rule *r)
{
	if (r != NULL)
		nftnl_rule_free(r);
}

static void nft_chain_drop(struct nftnl_chain *c)
{
	if (c != NULL)
		nftnl_chain_free(c);
}

static struct nftnl_expr *nft_expr(struct nft_rb *rb, const char *name)
{
	struct nftnl_expr *e = rb->oom ? NULL : nftnl_expr_alloc(name);

	if (e == NULL)
		rb->oom = true;
	else
		nftnl_rule_add_expr(rb->r, e);
	return e;
}

/* A meta or ct expression: key into register 1 (load), or register 1 into key (store). */
static void nft_keyed(struct nft_rb *rb, const char *name, uint16_t key_attr, uint32_t key,
                      uint16_t reg_attr)
{
	struct nftnl_expr *e = nft_expr(rb, name);

	if (e == NULL)
		return;
	nftnl_expr_set_u32(e, key_attr, key);
	nftnl_expr_set_u32(e, reg_attr, NFT_REG_1);
}

static void nft_meta(struct nft_rb *rb, uint32_t key)
{
	nft_keyed(rb, "meta", NFTNL_EXPR_META_KEY, key, NFTNL_EXPR_META_DREG);
}

static void nft_cmp(struct nft_rb *rb, uint32_t op, const void *data, uint32_t len)
{
	struct nftnl_expr *e = nft_expr(rb, "cmp");

	if (e == NULL)
		return;
	nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
	nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
	nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
}

static void nft_payload(struct nft_rb *rb, uint32_t base, uint32_t offset, uint32_t len)
{
	struct nftnl_expr *e = nft_expr(rb, "payload");

	if (e == NULL)
		return;
	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
}

/* reg1 = reg1 & mask */
static void nft_and(struct nft_rb *rb, const void *mask, uint32_t len)
{
	static const uint8_t zero[16];
	struct nftnl_expr *e = nft_expr(rb, "bitwise");

	if (e == NULL)
		return;
	nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
	nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
	nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, len);
	nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, mask, len);
	nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, zero, len);
}

static void nft_counter(struct nft_rb *rb)
{
	(void)nft_expr(rb, "counter");
}

static void nft_comment(struct nft_rb *rb, const char *text)
{
	struct nftnl_udata_buf *u;

	if (rb->oom)
		return;
	u = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);
	if (u == NULL || !nftnl_udata_put_strz(u, NFTNL_UDATA_RULE_COMMENT, text)) {
		rb->oom = true;
	} else {
		nftnl_rule_set_data(rb->r, NFTNL_RULE_USERDATA, nftnl_udata_buf_data(u),
		                    nftnl_udata_buf_len(u));
	}
	if (u != NULL)
		nftnl_udata_buf_free(u);
}

/* ip saddr / ip6 daddr ... [& mask] ==/!= addr */
static void nft_addr(struct nft_rb *rb, const struct rs_addr *a, bool src)
{
	static const uint8_t ones[16] = {
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	};
	bool v4 = a->family == AF_INET;
	uint32_t len = v4 ? 4 : 16;
	/* struct iphdr: saddr at 12, daddr at 16; struct ipv6hdr: saddr at 8, daddr at 24. */
	uint32_t off = v4 ? (src ? 12 : 16) : (src ? 8 : 24);
	const void *addr = v4 ? (const void *)&a->addr.v4 : (const void *)&a->addr.v6;
	const void *mask = v4 ? (const void *)&a->mask.v4 : (const void *)&a->mask.v6;

	nft_payload(rb, NFT_PAYLOAD_NETWORK_HEADER, off, len);
	if (memcmp(mask, ones, len) != 0)
		nft_and(rb, mask, len);
	nft_cmp(rb, a->invert ? NFT_CMP_NEQ : NFT_CMP_EQ, addr, len);
}

/* iifname: the whole name (zero-padded, as the kernel keeps it) or, for "eth+", its prefix. */
static void nft_iface(struct nft_rb *rb, const struct rulespec *rs)
{
	char name[IFNAMSIZ] = { 0 };
	size_t len = strlen(rs->iface);
	bool wild = len > 0 && rs->iface[len - 1] == '+';

	if (wild && len == 1)
		return; /* "-i +": any interface (fw_nft_check refuses "! -i +") */
	memcpy(name, rs->iface, wild ? len - 1 : len);
	nft_meta(rb, NFT_META_IIFNAME);
	nft_cmp(rb, rs->iface_invert ? NFT_CMP_NEQ : NFT_CMP_EQ, name,
	        wild ? (uint32_t)(len - 1) : IFNAMSIZ);
}

static struct nftnl_rule *nft_rule_new(struct nft_rb *rb)
{
	rb->oom = false;
	rb->r = nftnl_rule_alloc();
	if (rb->r == NULL) {
		rb->oom = true;
		return NULL;
	}
	nftnl_rule_set_u32(rb->r, NFTNL_RULE_FAMILY, NFPROTO_INET);
	nftnl_rule_set_str(rb->r, NFTNL_RULE_TABLE, nft_table);
	nftnl_rule_set_str(rb->r, NFTNL_RULE_CHAIN, NFT_CHAIN);
	return rb->r;
}

/* The REDIRECT rule for the families in fams (FW_V4|FW_V6). */
static struct nftnl_rule *nft_build_redirect(const struct rulespec *rs, int fams)
{
	struct nft_rb rb;
	struct nftnl_expr *e;
	uint8_t proto = IPPROTO_TCP, flags_mask = NFT_TCP_SYN_MASK, syn = NFT_TCP_SYN;
	uint16_t dport = htons(rs->dport), to_port = htons(rs->to_port);
	uint32_t local = RTN_LOCAL;

	if (nft_rule_new(&rb) == NULL)
		return NULL;
	if (fams != (FW_V4 | FW_V6)) {
		uint8_t nfproto = fams == FW_V4 ? NFPROTO_IPV4 : NFPROTO_IPV6;

		nft_meta(&rb, NFT_META_NFPROTO);
		nft_cmp(&rb, NFT_CMP_EQ, &nfproto, 1);
	}
	if (rs->src.set)
		nft_addr(&rb, &rs->src, true);
	if (rs->dst.set)
		nft_addr(&rb, &rs->dst, false);
	if (rs->has_iface)
		nft_iface(&rb, rs);
	nft_meta(&rb, NFT_META_L4PROTO);
	nft_cmp(&rb, NFT_CMP_EQ, &proto, 1);
	if (rs->has_dport) {
		nft_payload(&rb, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2); /* tcphdr.dest */
		nft_cmp(&rb, NFT_CMP_EQ, &dport, 2);
	}
	/* SYN only (iptables' --syn): see firewall.h. */
	nft_payload(&rb, NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1); /* the flags byte */
	nft_and(&rb, &flags_mask, 1);
	nft_cmp(&rb, NFT_CMP_EQ, &syn, 1);
	/* fib daddr type local: addressed to this host (iptables' -m addrtype --dst-type LOCAL). */
	e = nft_expr(&rb, "fib");
	if (e != NULL) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR);
		nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
		nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_DREG, NFT_REG_1);
	}
	nft_cmp(&rb, NFT_CMP_EQ, &local, sizeof(local));
	nft_counter(&rb);
	e = nft_expr(&rb, "immediate");
	if (e != NULL) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
		nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, &to_port, sizeof(to_port));
	}
	e = nft_expr(&rb, "redir");
	if (e != NULL) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_REG_PROTO_MIN, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
	}
	if (rs->has_comment)
		nft_comment(&rb, rs->comment);
	if (rb.oom) {
		nftnl_rule_free(rb.r);
		return NULL;
	}
	return rb.r;
}

/* ct state invalid counter: a conntrack user that never changes a verdict. */
static struct nftnl_rule *nft_build_hold(const struct rulespec *rs)
{
	char text[NFT_COMMENT_MAX];
	const char *base = rs->has_comment ? rs->comment : NFT_HOLD_DEFAULT;
	/* Cut the base so that the pid always fits (11 characters for any int). */
	int room = (int)(sizeof(text) - 1 - (sizeof(NFT_HOLD_TAG) - 1) - 11);
	uint32_t invalid = NF_CT_STATE_INVALID_BIT, zero = 0;
	struct nft_rb rb;
	struct nftnl_expr *e;

	if (nft_rule_new(&rb) == NULL)
		return NULL;
	e = nft_expr(&rb, "ct");
	if (e != NULL) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_STATE);
		nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
	}
	nft_and(&rb, &invalid, sizeof(invalid));
	nft_cmp(&rb, NFT_CMP_NEQ, &zero, sizeof(zero));
	nft_counter(&rb);
	snprintf(text, sizeof(text), "%.*s" NFT_HOLD_TAG "%d", room, base, (int)getpid());
	nft_comment(&rb, text);
	if (rb.oom) {
		nftnl_rule_free(rb.r);
		return NULL;
	}
	return rb.r;
}

/* -transparent's mark rules (fw_set_mark), in a chain of their own: type route, hook output,
 * so that a reply whose mark is restored here is routed again with it. */
#define NFT_MARK_CHAIN "output"
#define NFT_MARK_PRIO (-150) /* NF_IP_PRI_MANGLE */

/* restore: "ct mark M meta mark set ct mark" (the web server's replies); else
 * "meta mark M ct mark set meta mark" (the proxy's own packets, marked by SO_MARK). */
static struct nftnl_rule *nft_build_mark(bool restore)
{
	uint32_t m = fw_mark;
	struct nft_rb rb;

	if (nft_rule_new(&rb) == NULL)
		return NULL;
	nftnl_rule_set_str(rb.r, NFTNL_RULE_CHAIN, NFT_MARK_CHAIN);
	/* restore: ct mark == M -> meta mark set M; else meta mark == M -> ct mark set M. */
	if (restore)
		nft_keyed(&rb, "ct", NFTNL_EXPR_CT_KEY, NFT_CT_MARK, NFTNL_EXPR_CT_DREG);
	else
		nft_meta(&rb, NFT_META_MARK);
	nft_cmp(&rb, NFT_CMP_EQ, &m, sizeof(m));
	if (restore)
		nft_keyed(&rb, "meta", NFTNL_EXPR_META_KEY, NFT_META_MARK, NFTNL_EXPR_META_SREG);
	else
		nft_keyed(&rb, "ct", NFTNL_EXPR_CT_KEY, NFT_CT_MARK, NFTNL_EXPR_CT_SREG);
	nft_comment(&rb, restore ? "acme-alpn-proxy -transparent: replies"
	                         : "acme-alpn-proxy -transparent: fallback connections");
	if (rb.oom) {
		nftnl_rule_free(rb.r);
		return NULL;
	}
	return rb.r;
}

/* ---- looking at rules --------------------------------------------------------------------- */

/* What one rule is: a redirect (and for which families), and its handle. */
struct nft_rule_info {
	bool redirect;
	bool after_nfproto_meta; /* the previous expression loaded meta nfproto */
	int fams;
};

static int nft_expr_cb(struct nftnl_expr *e, void *data)
{
	struct nft_rule_info *ri = data;
	const char *name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
	bool was_nfproto = ri->after_nfproto_meta;

	ri->after_nfproto_meta = false;
	if (name == NULL)
		return MNL_CB_OK;
	if (strcmp(name, "redir") == 0) {
		ri->redirect = true;
	} else if (strcmp(name, "meta") == 0) {
		ri->after_nfproto_meta = nftnl_expr_get_u32(e, NFTNL_EXPR_META_KEY) ==
		                         NFT_META_NFPROTO;
	} else if (strcmp(name, "cmp") == 0 && was_nfproto) {
		uint32_t len = 0;
		const uint8_t *v = nftnl_expr_get(e, NFTNL_EXPR_CMP_DATA, &len);

		if (v != NULL && len == 1 && nftnl_expr_get_u32(e, NFTNL_EXPR_CMP_OP) == NFT_CMP_EQ)
			ri->fams &= v[0] == NFPROTO_IPV4 ? FW_V4 : v[0] == NFPROTO_IPV6 ? FW_V6 : 0;
	}
	return MNL_CB_OK;
}

struct nft_rules_walk {
	int families;                   /* count redirect rules for these */
	int count;
	bool own_only;                  /* only this process's table */
	uint64_t handles[NFT_MAX_HANDLES]; /* own table: the redirect rules' handles */
	int nhandles;
};

static int nft_rule_cb(const struct nlmsghdr *nlh, void *data)
{
	struct nft_rules_walk *w = data;
	struct nftnl_rule *r = nftnl_rule_alloc();
	struct nft_rule_info ri = { .fams = FW_V4 | FW_V6 };
	const char *table;

	if (r == NULL)
		return MNL_CB_ERROR;
	if (nftnl_rule_nlmsg_parse(nlh, r) < 0) {
		nftnl_rule_free(r);
		return MNL_CB_OK;
	}
	table = nftnl_rule_get_str(r, NFTNL_RULE_TABLE);
	if (table != NULL && nft_table_pid(table) > 0 &&
	    (!w->own_only || strcmp(table, nft_table) == 0)) {
		nftnl_expr_foreach(r, nft_expr_cb, &ri);
		if (ri.redirect && (ri.fams & w->families) != 0)
			w->count++;
		if (ri.redirect && w->own_only && w->nhandles < NFT_MAX_HANDLES)
			w->handles[w->nhandles++] = nftnl_rule_get_u64(r, NFTNL_RULE_HANDLE);
	}
	nftnl_rule_free(r);
	return MNL_CB_OK;
}

/* What a refusal of the install batch means, named after what the kernel lacks. */
static void nft_install_error(int failed, int e, const char *what, char *err, size_t errlen)
{
	if (e == EPERM) {
		fw_msg(err, errlen, "the kernel refused %s: %s (it needs CAP_NET_ADMIN)", what,
		        strerror(e));
	} else if (failed == -1) {
		fw_msg(err, errlen, "the kernel has no nftables (%s): check that the module "
		        "nf_tables can be loaded (modprobe nf_tables), or whether the kernel was "
		        "built without CONFIG_NF_TABLES; -firewall iptables uses the legacy tables",
		        strerror(e));
	} else if (failed == 0 && e == EOPNOTSUPP) {
		fw_msg(err, errlen, "the kernel does not support nftables tables owned by a process "
		        "(NFT_TABLE_F_OWNER, Linux 5.12 or later): %s; use -firewall iptables",
		        strerror(e));
	} else if (failed == 0 && e == EEXIST) {
		fw_msg(err, errlen, "the nftables table inet %s exists already (made by someone "
		        "else for this pid?): %s", nft_table, strerror(e));
	} else if (failed == 1 && (e == ENOENT || e == EOPNOTSUPP)) {
		fw_msg(err, errlen, "the kernel cannot make an inet nat chain (%s): check that the "
		        "module nft_chain_nat can be loaded (nat in the inet family needs Linux 5.2 or "
		        "later)", strerror(e));
	} else if (failed == 2 && (e == ENOENT || e == EOPNOTSUPP)) {
		fw_msg(err, errlen, "the kernel lacks an expression of the redirect rule (%s): "
		        "check that the modules nft_fib_inet (fib daddr type local) and nft_redir "
		        "(redirect) can be loaded", strerror(e));
	} else if (failed == 3 && (e == ENOENT || e == EOPNOTSUPP)) {
		fw_msg(err, errlen, "the kernel lacks the ct expression of the conntrack hold rule "
		        "(%s): check that the module nft_ct can be loaded", strerror(e));
	} else {
		fw_msg(err, errlen, "the kernel refused %s: %s", what, strerror(e));
	}
}

/* The families rs is installed for, of those asked: both, unless -s/-d or the caller name
 * one. */
static int nft_families(const struct rulespec *rs, int families)
{
	int f = 0;

	if ((families & FW_V4) != 0 && rulespec_applies(rs, AF_INET))
		f |= FW_V4;
	if ((families & FW_V6) != 0 && rulespec_applies(rs, AF_INET6))
		f |= FW_V6;
	return f;
}

int fw_nft_install(const struct rulespec *rs, int *families, char *err, size_t errlen,
                   char *warn, size_t warnlen)
{
	static struct nft_batch bt; /* 32 KiB: not on the stack */
	struct nftnl_table *t = NULL;
	struct nftnl_chain *c = NULL, *mc = NULL;
	struct nftnl_rule *redir = NULL, *hold = NULL, *mrest = NULL, *msave = NULL;
	struct nlmsghdr *nlh;
	uint32_t tflags = NFT_TABLE_F_OWNER;
	int fams = nft_families(rs, *families), failed, e, ret = -1;

	nft_clear(err, errlen);
	if (warn != NULL)
		nft_clear(warn, warnlen);
	if (fams == 0) {
		fw_msg_no_family(rs, *families, err, errlen);
		*families = 0;
		return -1;
	}
	*families = 0;
	if (fw_nft_check(rs, err, errlen) < 0)
		return -1;
	if (nft_have_table) {
		/* Once per process in practice; a second call must not add a second rule. */
		struct nft_rules_walk w = { .families = FW_V4 | FW_V6, .own_only = true };

		if (nft_dump(nft_nl, NFT_MSG_GETRULE, nft_table, nft_rule_cb, &w, err, errlen) < 0)
			return -1;
		if (w.nhandles > 0) {
			*families = fams;
			return 0;
		}
		fw_msg(err, errlen, "the nftables table inet %s is in place without its redirect "
		        "rule: release it first", nft_table);
		return -1;
	}
	if (nft_nl == NULL && nft_open(&nft_nl, err, errlen) < 0)
		return -1;
	snprintf(nft_table, sizeof(nft_table), NFT_TABLE_PREFIX "%ld", (long)getpid());
#ifdef ENABLE_TEST_HOOKS
	/* Test builds only: a table flag the kernel does not know, which is what a kernel before
	 * 5.12 says to NFT_TABLE_F_OWNER (EOPNOTSUPP). */
	if (getenv("ACME_ALPN_PROXY_TEST_HOOK") != NULL &&
	    strcmp(getenv("ACME_ALPN_PROXY_TEST_HOOK"), "nft-no-owner") == 0)
		tflags |= 0x80000000u;
#endif
	t = nftnl_table_alloc();
	c = nftnl_chain_alloc();
	redir = nft_build_redirect(rs, fams);
	hold = nft_build_hold(rs);
	if (fw_mark != 0) {
		mc = nftnl_chain_alloc();
		mrest = nft_build_mark(true);
		msave = nft_build_mark(false);
	}
	if (t == NULL || c == NULL || redir == NULL || hold == NULL ||
	    (fw_mark != 0 && (mc == NULL || mrest == NULL || msave == NULL))) {
		fw_msg(err, errlen, "out of memory building the nftables rules");
		goto out;
	}
	nftnl_table_set_u32(t, NFTNL_TABLE_FAMILY, NFPROTO_INET);
	nftnl_table_set_str(t, NFTNL_TABLE_NAME, nft_table);
	nftnl_table_set_u32(t, NFTNL_TABLE_FLAGS, tflags);
	nftnl_chain_set_u32(c, NFTNL_CHAIN_FAMILY, NFPROTO_INET);
	nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, nft_table);
	nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, NFT_CHAIN);
	nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, "nat");
	nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, NF_INET_PRE_ROUTING);
	nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, NFT_PRIO);
	nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, NF_ACCEPT);

	nft_batch_start(&bt);
	/* NLM_F_EXCL: a table of that name can only be a stranger's (ours died with its pid). */
	nlh = nft_batch_msg(&bt, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, "the table");
	nftnl_table_nlmsg_build_payload(nlh, t);
	nft_batch_next(&bt);
	nlh = nft_batch_msg(&bt, NFT_MSG_NEWCHAIN, NLM_F_CREATE, "the nat prerouting chain");
	nftnl_chain_nlmsg_build_payload(nlh, c);
	nft_batch_next(&bt);
	nlh = nft_batch_msg(&bt, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND,
	                    "the redirect rule");
	nftnl_rule_nlmsg_build_payload(nlh, redir);
	nft_batch_next(&bt);
	nlh = nft_batch_msg(&bt, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND,
	                    "the conntrack hold rule");
	nftnl_rule_nlmsg_build_payload(nlh, hold);
	nft_batch_next(&bt);
	if (fw_mark != 0) {
		nftnl_chain_set_u32(mc, NFTNL_CHAIN_FAMILY, NFPROTO_INET);
		nftnl_chain_set_str(mc, NFTNL_CHAIN_TABLE, nft_table);
		nftnl_chain_set_str(mc, NFTNL_CHAIN_NAME, NFT_MARK_CHAIN);
		nftnl_chain_set_str(mc, NFTNL_CHAIN_TYPE, "route");
		nftnl_chain_set_u32(mc, NFTNL_CHAIN_HOOKNUM, NF_INET_LOCAL_OUT);
		nftnl_chain_set_s32(mc, NFTNL_CHAIN_PRIO, NFT_MARK_PRIO);
		nftnl_chain_set_u32(mc, NFTNL_CHAIN_POLICY, NF_ACCEPT);
		nlh = nft_batch_msg(&bt, NFT_MSG_NEWCHAIN, NLM_F_CREATE,
		                    "the route output chain (-transparent)");
		nftnl_chain_nlmsg_build_payload(nlh, mc);
		nft_batch_next(&bt);
		nlh = nft_batch_msg(&bt, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND,
		                    "the mark restore rule (-transparent)");
		nftnl_rule_nlmsg_build_payload(nlh, mrest);
		nft_batch_next(&bt);
		nlh = nft_batch_msg(&bt, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND,
		                    "the connmark save rule (-transparent)");
		nftnl_rule_nlmsg_build_payload(nlh, msave);
		nft_batch_next(&bt);
	}
	if (nft_batch_run(nft_nl, &bt, &failed, &e, err, errlen) < 0) {
		if (failed >= -1)
			nft_install_error(failed, e, failed >= 0 ? bt.what[failed] : "the batch", err,
			                  errlen);
		goto out;
	}
	nft_have_table = true;
	*families = fams;
	ret = 0;
out:
	if (t != NULL)
		nftnl_table_free(t);
	nft_chain_drop(c);
	nft_chain_drop(mc);
	nft_rule_drop(redir);
	nft_rule_drop(hold);
	nft_rule_drop(mrest);
	nft_rule_drop(msave);
	return ret;
}

/* ---- counting, removing, releasing ------------------------------------------------------- */

int fw_nft_count(const struct rulespec *rs, int families, pid_t pid, char *err, size_t errlen)
{
	struct nft_rules_walk w = { .families = families };
	struct mnl_socket *tmp, *nl;
	char table[sizeof(nft_table)];
	int r;

	/* Every redirect rule in a table of ours counts, there is one per instance; with pid,
	 * only those in that process's table. */
	(void)rs;
	nft_clear(err, errlen);
	if (pid > 0)
		snprintf(table, sizeof(table), NFT_TABLE_PREFIX "%ld", (long)pid);
	nl = nft_reader(&tmp, err, errlen);
	if (nl == NULL)
		return -1;
	r = nft_dump(nl, NFT_MSG_GETRULE, pid > 0 ? table : NULL, nft_rule_cb, &w, err, errlen);
	if (tmp != NULL)
		mnl_socket_close(tmp);
	return r < 0 ? -1 : w.count;
}

int fw_nft_remove(const struct rulespec *rs, int families, char *err, size_t errlen)
{
	static struct nft_batch bt;
	struct nft_rules_walk w = { .families = FW_V4 | FW_V6, .own_only = true };
	int failed, e, i;

	(void)rs;
	(void)families; /* one inet rule serves both */
	nft_clear(err, errlen);
	if (!nft_have_table || nft_nl == NULL)
		return 0;
	if (nft_dump(nft_nl, NFT_MSG_GETRULE, nft_table, nft_rule_cb, &w, err, errlen) < 0)
		return -1;
	if (w.nhandles == 0)
		return 0;
	nft_batch_start(&bt);
	for (i = 0; i < w.nhandles && i < NFT_MAX_MSGS; i++) {
		struct nftnl_rule *r = nftnl_rule_alloc();
		struct nlmsghdr *nlh;

		if (r == NULL) {
			fw_msg(err, errlen, "out of memory");
			mnl_nlmsg_batch_stop(bt.b);
			return -1;
		}
		nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, NFPROTO_INET);
		nftnl_rule_set_str(r, NFTNL_RULE_TABLE, nft_table);
		nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, NFT_CHAIN);
		nftnl_rule_set_u64(r, NFTNL_RULE_HANDLE, w.handles[i]);
		nlh = nft_batch_msg(&bt, NFT_MSG_DELRULE, 0, "the deletion of the redirect rule");
		nftnl_rule_nlmsg_build_payload(nlh, r);
		nft_batch_next(&bt);
		nftnl_rule_free(r);
	}
	if (nft_batch_run(nft_nl, &bt, &failed, &e, err, errlen) < 0) {
		if (failed >= -1)
			fw_msg(err, errlen, "deleting the redirect rule from table inet %s: %s",
			        nft_table, strerror(e));
		return -1;
	}
	return 0;
}

/* The whole table goes: the hold with it. */
int fw_nft_release(const struct rulespec *rs, int families, char *err, size_t errlen)
{
	static struct nft_batch bt;
	struct nftnl_table *t;
	struct nlmsghdr *nlh;
	int failed, e;

	(void)rs;
	(void)families;
	nft_clear(err, errlen);
	if (!nft_have_table || nft_nl == NULL)
		return 0;
	t = nftnl_table_alloc();
	if (t == NULL) {
		fw_msg(err, errlen, "out of memory");
		return -1;
	}
	nftnl_table_set_u32(t, NFTNL_TABLE_FAMILY, NFPROTO_INET);
	nftnl_table_set_str(t, NFTNL_TABLE_NAME, nft_table);
	nft_batch_start(&bt);
	nlh = nft_batch_msg(&bt, NFT_MSG_DELTABLE, 0, "the deletion of the table");
	nftnl_table_nlmsg_build_payload(nlh, t);
	nft_batch_next(&bt);
	nftnl_table_free(t);
	if (nft_batch_run(nft_nl, &bt, &failed, &e, err, errlen) < 0 && !(failed == 0 &&
	                                                                   e == ENOENT)) {
		if (failed >= -1)
			fw_msg(err, errlen, "deleting table inet %s: %s", nft_table, strerror(e));
		return -1;
	}
	nft_clear(err, errlen);
	nft_have_table = false;
	/* The socket stays open: it is this process's for its whole life (see the top). */
	return 0;
}

/* An owner table cannot outlive its process; a crashed libiptc instance's rules can. */
int fw_nft_clear_stale(const struct rulespec *rs, int families, struct fw_stale *st, char *err,
                       size_t errlen)
{
	return fw_iptc_clear_stale(rs, families, st, err, errlen);
}

/* fw_clear_stale goes through libiptc, and waits for the xtables lock as it does. */
static void fw_nft_set_lock_wait(unsigned ms)
{
	fw_iptc_set_lock_wait(ms);
}

const struct fw_ops fw_ops_nft = {
	"nftables", fw_nft_install, fw_nft_remove, fw_nft_release, fw_nft_clear_stale,
	fw_nft_count, fw_nft_set_lock_wait,
};

/* fw_find_others, nftables: every chain of type nat on the prerouting hook, in any family, and
 * in it the rules that redirect (redir, dnat, or iptables-nft's REDIRECT and DNAT targets) TCP
 * port dport or every port. A port is recognised in the form nft and iptables-nft give it: the
 * transport header's bytes 2-3 compared equal. The tables of instances are skipped. */
#define NFT_OTHER_CHAINS 64
struct nft_nat_chain {
	uint32_t family;
	int prio;
	char table[64], name[64];
};

struct nft_others_scan {
	struct nft_nat_chain c[NFT_OTHER_CHAINS];
	int n;
	uint16_t dport;
	struct fw_others *out;
	/* one rule's expressions */
	bool port_load, port_other, port_ours, nat;
	const char *nat_kind;
};

static const char *nft_family_name(uint32_t f)
{
	return f == NFPROTO_IPV4 ? "ip" : f == NFPROTO_IPV6 ? "ip6" : f == NFPROTO_INET ? "inet"
	       : "other";
}

static int nft_others_chain_cb(const struct nlmsghdr *nlh, void *data)
{
	struct nft_others_scan *sc = data;
	struct nftnl_chain *c = nftnl_chain_alloc();

	if (c == NULL)
		return MNL_CB_OK;
	if (nftnl_chain_nlmsg_parse(nlh, c) == 0 && nftnl_chain_is_set(c, NFTNL_CHAIN_HOOKNUM) &&
	    nftnl_chain_is_set(c, NFTNL_CHAIN_TYPE) &&
	    strcmp(nftnl_chain_get_str(c, NFTNL_CHAIN_TYPE), "nat") == 0 &&
	    nftnl_chain_get_u32(c, NFTNL_CHAIN_HOOKNUM) == NF_INET_PRE_ROUTING &&
	    strncmp(nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE), NFT_TABLE_PREFIX,
	            sizeof(NFT_TABLE_PREFIX) - 1) != 0 && sc->n < NFT_OTHER_CHAINS) {
		struct nft_nat_chain *k = &sc->c[sc->n++];

		k->family = nftnl_chain_get_u32(c, NFTNL_CHAIN_FAMILY);
		k->prio = (int)nftnl_chain_get_s32(c, NFTNL_CHAIN_PRIO);
		snprintf(k->table, sizeof(k->table), "%s", nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE));
		snprintf(k->name, sizeof(k->name), "%s", nftnl_chain_get_str(c, NFTNL_CHAIN_NAME));
	}
	nftnl_chain_free(c);
	return MNL_CB_OK;
}

static int nft_others_expr_cb(struct nftnl_expr *e, void *data)
{
	struct nft_others_scan *sc = data;
	const char *name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);

	if (strcmp(name, "payload") == 0) {
		sc->port_load = nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_BASE) ==
		                        NFT_PAYLOAD_TRANSPORT_HEADER &&
		                nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET) == 2 &&
		                nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_LEN) == 2;
		return MNL_CB_OK;
	}
	if (strcmp(name, "cmp") == 0 && sc->port_load) {
		uint32_t len = 0;
		const void *d = nftnl_expr_get(e, NFTNL_EXPR_CMP_DATA, &len);
		uint16_t port;

		if (nftnl_expr_get_u32(e, NFTNL_EXPR_CMP_OP) == NFT_CMP_EQ && len == 2) {
			memcpy(&port, d, 2);
			if (ntohs(port) == sc->dport)
				sc->port_ours = true;
			else
				sc->port_other = true;
		}
	} else if (strcmp(name, "redir") == 0) {
		sc->nat = true;
		sc->nat_kind = "redirect";
	} else if (strcmp(name, "nat") == 0 &&
	           nftnl_expr_get_u32(e, NFTNL_EXPR_NAT_TYPE) == NFT_NAT_DNAT) {
		sc->nat = true;
		sc->nat_kind = "dnat";
	} else if (strcmp(name, "target") == 0) {
		const char *t = nftnl_expr_get_str(e, NFTNL_EXPR_TG_NAME);

		if (t != NULL && (strcmp(t, "REDIRECT") == 0 || strcmp(t, "DNAT") == 0)) {
			sc->nat = true;
			sc->nat_kind = t;
		}
	}
	sc->port_load = false;
	return MNL_CB_OK;
}

static int nft_others_rule_cb(const struct nlmsghdr *nlh, void *data)
{
	struct nft_others_scan *sc = data;
	struct nftnl_rule *r = nftnl_rule_alloc();

	if (r == NULL)
		return MNL_CB_OK;
	if (nftnl_rule_nlmsg_parse(nlh, r) == 0) {
		uint32_t fam = nftnl_rule_get_u32(r, NFTNL_RULE_FAMILY);
		const char *table = nftnl_rule_get_str(r, NFTNL_RULE_TABLE);
		const char *chain = nftnl_rule_get_str(r, NFTNL_RULE_CHAIN);

		for (int i = 0; i < sc->n; i++) {
			const struct nft_nat_chain *k = &sc->c[i];

			if (k->family != fam || strcmp(k->table, table) != 0 ||
			    strcmp(k->name, chain) != 0)
				continue;
			sc->port_load = sc->port_other = sc->port_ours = sc->nat = false;
			nftnl_expr_foreach(r, nft_others_expr_cb, sc);
			if (sc->nat && (sc->port_ours || !sc->port_other))
				fw_others_add(sc->out, k->prio, "nftables %s %s chain %s, handle %llu "
				              "(%s, priority %d)", nft_family_name(fam), table, chain,
				              (unsigned long long)nftnl_rule_get_u64(r, NFTNL_RULE_HANDLE),
				              sc->nat_kind, k->prio);
			break;
		}
	}
	nftnl_rule_free(r);
	return MNL_CB_OK;
}

int fw_nft_others(uint16_t dport, struct fw_others *out, char *err, size_t errlen)
{
	struct nft_others_scan *sc = calloc(1, sizeof(*sc));
	struct mnl_socket *nl;
	int ret = -1;

	if (errlen > 0)
		err[0] = '\0';
	if (sc == NULL) {
		fw_msg(err, errlen, "out of memory");
		return -1;
	}
	sc->dport = dport;
	sc->out = out;
	if (nft_open(&nl, err, errlen) < 0) {
		free(sc);
		return -1;
	}
	if (nft_dump_family(nl, NFT_MSG_GETCHAIN, NFPROTO_UNSPEC, NULL, nft_others_chain_cb, sc,
	                    err, errlen) == 0 &&
	    (sc->n == 0 || nft_dump_family(nl, NFT_MSG_GETRULE, NFPROTO_UNSPEC, NULL,
	                                   nft_others_rule_cb, sc, err, errlen) == 0))
		ret = 0;
	mnl_socket_close(nl);
	free(sc);
	return ret;
}

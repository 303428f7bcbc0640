/* firewall.h's functions: each calls the backend chosen once with fw_select (libiptc, the
 * default of -firewall, until a caller chooses). */
#include "autoconfig.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "firewall.h"
#include "firewall_ops.h"

static const struct fw_ops *fw_ops = &fw_ops_iptc;

/* Append to a message, "; " between parts: several families or steps may fail in one call. */
void fw_msg(char *buf, size_t len, const char *fmt, ...)
{
	size_t used;
	va_list ap;

	if (buf == NULL || len == 0)
		return;
	used = strnlen(buf, len);
	if (used >= len - 1)
		return;
	if (used > 0) {
		snprintf(buf + used, len - used, "; ");
		used = strnlen(buf, len);
	}
	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

uint32_t fw_mark;

void fw_set_mark(uint32_t mark)
{
	fw_mark = mark;
}

bool fw_mark_supported(void)
{
	return true; /* both backends have them */
}

void fw_select(enum fw_backend b)
{
	fw_ops = b == FW_BACKEND_NFTABLES ? &fw_ops_nft : &fw_ops_iptc;
}

const char *fw_backend_name(void)
{
	return fw_ops->name;
}

void fw_msg_no_family(const struct rulespec *rs, int families, char *err, size_t errlen)
{
	const char *only = rulespec_applies(rs, AF_INET) ? "IPv4" : "IPv6";

	if ((families & (FW_V4 | FW_V6)) == 0)
		fw_msg(err, errlen, "no address family to install the rule for");
	else
		fw_msg(err, errlen, "the rule names %s addresses only, but %s is disabled: nothing "
		       "to install", only, only);
}

int fw_check(enum fw_backend b, const struct rulespec *rs, char *err, size_t errlen)
{
	if (errlen > 0)
		err[0] = '\0';
	return b == FW_BACKEND_NFTABLES ? fw_nft_check(rs, err, errlen) : 0;
}

int fw_install(const struct rulespec *rs, int *families, char *err, size_t errlen, char *warn,
               size_t warnlen)
{
	return fw_ops->install(rs, families, err, errlen, warn, warnlen);
}

int fw_remove(const struct rulespec *rs, int families, char *err, size_t errlen)
{
	return fw_ops->remove(rs, families, err, errlen);
}

int fw_release(const struct rulespec *rs, int families, char *err, size_t errlen)
{
	return fw_ops->release(rs, families, err, errlen);
}

int fw_clear_stale(const struct rulespec *rs, int families, struct fw_stale *st, char *err,
                   size_t errlen)
{
	return fw_ops->clear_stale(rs, families, st, err, errlen);
}

int fw_count(const struct rulespec *rs, int families, pid_t pid, char *err, size_t errlen)
{
	return fw_ops->count(rs, families, pid, err, errlen);
}

void fw_set_lock_wait(unsigned ms)
{
	fw_ops->set_lock_wait(ms);
}

const struct fw_ops fw_ops_iptc = {
	"iptables", fw_iptc_install, fw_iptc_remove, fw_iptc_release, fw_iptc_clear_stale,
	fw_iptc_count, fw_iptc_set_lock_wait,
};

int fw_priority(void)
{
	return fw_ops == &fw_ops_nft ? -110 : -100;
}

void fw_others_add(struct fw_others *out, int prio, const char *fmt, ...)
{
	va_list ap;

	if (out->n == FW_OTHERS_MAX) {
		out->more = true;
		return;
	}
	out->o[out->n].prio = prio;
	va_start(ap, fmt);
	vsnprintf(out->o[out->n].where, sizeof(out->o[out->n].where), fmt, ap);
	va_end(ap);
	out->n++;
}

int fw_find_others(const struct rulespec *rs, int families, struct fw_others *out, char *err,
                   size_t errlen)
{
	char e1[256], e2[256];
	int r1, r2;

	memset(out, 0, sizeof(*out));
	r1 = fw_iptc_others(rs, families, out, e1, sizeof(e1));
	r2 = fw_nft_others(rs->dport, out, e2, sizeof(e2));
	if (errlen > 0)
		err[0] = '\0';
	if (r1 < 0)
		fw_msg(err, errlen, "%s", e1);
	/* No nf_tables at all: nothing can sit there. */
	if (r2 < 0 && fw_ops == &fw_ops_nft)
		fw_msg(err, errlen, "%s", e2);
	return r1 < 0 || (r2 < 0 && fw_ops == &fw_ops_nft) ? -1 : 0;
}

/* Unit tests of the worker -> parent messages (src/workermsg.c): the control lines' encoder
 * and decoder, and the splitter that cuts a log pipe's bytes into lines (no I/O). */
#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include "testutil.h"
#include "workermsg.h"

#define MAX_LINES 16

struct seen {
	size_t n;
	char line[MAX_LINES][128];
	size_t len[MAX_LINES];
};

static void collect(void *arg, char *line, size_t len)
{
	struct seen *s = arg;

	CU_ASSERT_EQUAL(strlen(line), len); /* NUL-terminated where its '\n' was */
	if (s->n < MAX_LINES) {
		snprintf(s->line[s->n], sizeof(s->line[0]), "%s", line);
		s->len[s->n] = len;
	}
	s->n++;
}

/* Feed text to the splitter in pieces of at most chunk bytes, as reads would bring it. */
static void feed(struct workermsg_lines *l, const char *text, size_t chunk, struct seen *s)
{
	size_t left = strlen(text);

	while (left > 0) {
		size_t room, n;
		char *space = workermsg_space(l, &room);

		CU_ASSERT_TRUE_FATAL(room > 0);
		n = left < chunk ? left : chunk;
		n = n < room ? n : room;
		memcpy(space, text, n);
		workermsg_split(l, n, collect, s);
		text += n;
		left -= n;
	}
}

static void test_encode_decode(void)
{
	char buf[32];
	long pid = -1;

	CU_ASSERT_EQUAL(workermsg_encode(WORKERMSG_READY, 1234, buf, sizeof(buf)), 8);
	CU_ASSERT_STRING_EQUAL(buf, "!R 1234\n");
	CU_ASSERT_EQUAL(workermsg_encode(WORKERMSG_CLOSED, 77, buf, sizeof(buf)), 6);
	CU_ASSERT_STRING_EQUAL(buf, "!L 77\n");
	/* No room, or no control line of that kind: nothing to write. */
	CU_ASSERT_EQUAL(workermsg_encode(WORKERMSG_READY, 1234, buf, 8), 0);
	CU_ASSERT_EQUAL(workermsg_encode(WORKERMSG_LOG, 1, buf, sizeof(buf)), 0);
	CU_ASSERT_EQUAL(workermsg_encode(WORKERMSG_UNKNOWN, 1, buf, sizeof(buf)), 0);

	/* What the encoder writes, the decoder reads back (the splitter takes the '\n'). */
	workermsg_encode(WORKERMSG_READY, 4242, buf, sizeof(buf));
	buf[strlen(buf) - 1] = '\0';
	CU_ASSERT_EQUAL(workermsg_decode(buf, &pid), WORKERMSG_READY);
	CU_ASSERT_EQUAL(pid, 4242);
	CU_ASSERT_EQUAL(workermsg_decode("!L 9", &pid), WORKERMSG_CLOSED);
	CU_ASSERT_EQUAL(pid, 9);
}

static void test_decode_other(void)
{
	long pid = 55;

	CU_ASSERT_EQUAL(workermsg_decode("<6>conn 192.0.2.1:5: done", &pid), WORKERMSG_LOG);
	CU_ASSERT_EQUAL(workermsg_decode("text a library wrote to stderr", &pid), WORKERMSG_LOG);
	CU_ASSERT_EQUAL(workermsg_decode("", &pid), WORKERMSG_LOG);
	CU_ASSERT_EQUAL(workermsg_decode("!X 12", &pid), WORKERMSG_UNKNOWN);
	CU_ASSERT_EQUAL(workermsg_decode("!", &pid), WORKERMSG_UNKNOWN);
	CU_ASSERT_EQUAL(workermsg_decode("!R", &pid), WORKERMSG_UNKNOWN);
	CU_ASSERT_EQUAL(workermsg_decode("!R12", &pid), WORKERMSG_UNKNOWN);
	CU_ASSERT_EQUAL(workermsg_decode("!R ", &pid), WORKERMSG_UNKNOWN);
	CU_ASSERT_EQUAL(workermsg_decode("!R 12x", &pid), WORKERMSG_UNKNOWN);
	CU_ASSERT_EQUAL(workermsg_decode("!R 99999999999999999999999", &pid), WORKERMSG_UNKNOWN);
	CU_ASSERT_EQUAL(pid, 55); /* untouched by a line that is not a valid control line */
}

static void test_split_whole(void)
{
	struct workermsg_lines l = { 0 };
	struct seen s = { 0 };

	feed(&l, "<6>one\n!R 5\n<4>three\n", 4096, &s);
	CU_ASSERT_EQUAL_FATAL(s.n, 3);
	CU_ASSERT_STRING_EQUAL(s.line[0], "<6>one");
	CU_ASSERT_STRING_EQUAL(s.line[1], "!R 5");
	CU_ASSERT_STRING_EQUAL(s.line[2], "<4>three");
	CU_ASSERT_EQUAL(s.len[2], 8);
	CU_ASSERT_EQUAL(l.len, 0);
}

/* Lines cut anywhere by the reads come out whole, in order, once. */
static void test_split_pieces(void)
{
	static const char text[] = "<6>first line\n\n<3>third, after an empty one\n!L 77\n";

	for (size_t chunk = 1; chunk <= sizeof(text); chunk++) {
		struct workermsg_lines l = { 0 };
		struct seen s = { 0 };

		feed(&l, text, chunk, &s);
		CU_ASSERT_EQUAL_FATAL(s.n, 4);
		CU_ASSERT_STRING_EQUAL(s.line[0], "<6>first line");
		CU_ASSERT_STRING_EQUAL(s.line[1], "");
		CU_ASSERT_EQUAL(s.len[1], 0);
		CU_ASSERT_STRING_EQUAL(s.line[2], "<3>third, after an empty one");
		CU_ASSERT_STRING_EQUAL(s.line[3], "!L 77");
		CU_ASSERT_EQUAL(l.len, 0);
	}
}

/* At EOF the rest is a last line; with nothing left, no line. */
static void test_finish(void)
{
	struct workermsg_lines l = { 0 };
	struct seen s = { 0 };

	feed(&l, "<6>whole\n<2>last words", 5, &s);
	CU_ASSERT_EQUAL(s.n, 1);
	workermsg_finish(&l, collect, &s);
	CU_ASSERT_EQUAL_FATAL(s.n, 2);
	CU_ASSERT_STRING_EQUAL(s.line[1], "<2>last words");
	CU_ASSERT_EQUAL(l.len, 0);
	workermsg_finish(&l, collect, &s);
	CU_ASSERT_EQUAL(s.n, 2);
}

/* A line that fills the whole buffer without an end is dropped; the lines after it still come
 * through. */
static void test_overlong(void)
{
	static struct workermsg_lines l;
	struct seen s = { 0 };
	size_t room;
	char *space = workermsg_space(&l, &room);

	CU_ASSERT_EQUAL_FATAL(room, sizeof(l.buf));
	memset(space, 'x', room);
	workermsg_split(&l, room, collect, &s);
	CU_ASSERT_EQUAL(s.n, 0);
	CU_ASSERT_EQUAL(l.len, 0);
	feed(&l, "<6>after\n", 3, &s);
	CU_ASSERT_EQUAL_FATAL(s.n, 1);
	CU_ASSERT_STRING_EQUAL(s.line[0], "<6>after");

	/* A line just short of the buffer, with its end, is kept whole. */
	memset(&s, 0, sizeof(s));
	space = workermsg_space(&l, &room);
	memset(space, 'y', room - 1);
	space[room - 1] = '\n';
	workermsg_split(&l, room, collect, &s);
	CU_ASSERT_EQUAL(s.n, 1);
	CU_ASSERT_EQUAL(s.len[0], sizeof(l.buf) - 1);
	CU_ASSERT_EQUAL(l.len, 0);
}

int main(void)
{
	static const struct tu_test tests[] = {
		{ "encode, decode", test_encode_decode },
		{ "decode: log lines and malformed control lines", test_decode_other },
		{ "split: whole lines", test_split_whole },
		{ "split: lines cut by the reads", test_split_pieces },
		{ "finish: the last line at EOF", test_finish },
		{ "split: an overlong line is dropped", test_overlong },
	};

	if (TU_ADD_SUITE("workermsg", tests) != 0)
		return 99;
	return tu_run();
}

/* An intrusive circular doubly linked list: a struct embeds a struct link for each list it can
 * be on, and a list head is a link of its own. A link that is on no list points to itself, so
 * link_del is safe on it. */
#ifndef LIST_H
#define LIST_H

#include <stdbool.h>
#include <stddef.h>

struct link {
	struct link *prev, *next;
};

/* The struct of type `type` whose member `field` is the link l. */
#define LINK_ENTRY(l, type, field) ((type *)(void *)((char *)(l) - offsetof(type, field)))

static inline void link_init(struct link *l)
{
	l->prev = l->next = l;
}

static inline bool link_empty(const struct link *head)
{
	return head->next == head;
}

static inline void link_del(struct link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	link_init(l);
}

static inline void link_add_tail(struct link *head, struct link *l)
{
	l->prev = head->prev;
	l->next = head;
	head->prev->next = l;
	head->prev = l;
}

#endif

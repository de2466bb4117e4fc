/*
 * queue.h - questions about the queue directory as a whole, asked across its journals: whether
 * a live process owns a journal, and which journal creates a given run.
 */
#ifndef MLT_QUEUE_H
#define MLT_QUEUE_H

#include "common.h"

#include <stdbool.h>

/* Whether a live process holds the journal's lock: 1 yes, 0 no, -1 unknown (errno set). A
 * shared, non-blocking flock conflicts with the owner's exclusive one and is released at once;
 * nothing is created or modified. */
int mlt__journal_owned(const char *journal_dir);

/*
 * Looks through the journals of queue_dir (opened read-only: nothing is locked, cut or moved)
 * for the one that creates the run with client key run_key: its run map has the run created, or
 * a CREATE record of it waits there undelivered. MLT_OK with the journal's directory in who (cut
 * to who_len) and *owned set when a live process owns it; MLT_ERR_NOT_FOUND when no journal
 * does; MLT_ERR_IO when the queue cannot be listed. Reads every undelivered record of every
 * journal: for the rare moments that need it (a wait for a run that ran out of time, status).
 */
mlt_err mlt__queue_find_creator(const char *queue_dir, const char *run_key, char *who,
                                size_t who_len, bool *owned);

#endif

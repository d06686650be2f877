/* commit_script: the calling convention of the two scripts the committer sends, src/scripts/commit.lua and
 * src/scripts/requeue.lua: where each KEYS and ARGV entry goes, commit.lua's modes and item tags, and what each
 * script replies. Each script declares the same names, with the same values, as Lua locals at its top, and
 * tests/unit/test_commit_script.c checks that the two sides agree: change a value here and in the script together.
 * The scripts' header comments say what each entry means. */
#ifndef CHUNKD_COMMIT_SCRIPT_H
#define CHUNKD_COMMIT_SCRIPT_H

/* An EVAL call's argv is "EVAL", the script, the number of keys, the keys, then the arguments. Where KEYS[k] and
 * ARGV[a] (1-based, as in Lua) go in it, and how long it is. */
#define SCRIPT_EVAL_KEY(k) (2 + (k))
#define SCRIPT_EVAL_ARG(n_keys, a) (2 + (n_keys) + (a))
#define SCRIPT_EVAL_ARGC(n_keys, n_args) (3 + (n_keys) + (n_args))
#define SCRIPT_TEXT_(x) #x
#define SCRIPT_TEXT(x) SCRIPT_TEXT_(x) /* a number as a string literal (the number of keys) */

/* commit.lua: KEYS. */
#define COMMIT_KEY_PROCESSING 1 /* this worker's processing list */
#define COMMIT_KEY_RESULTS 2    /* results stream */
#define COMMIT_KEY_STATS 3      /* stats hash */
#define COMMIT_KEY_DEAD 4       /* dead list */
#define COMMIT_KEY_CHECKPOINT 5 /* the chunk's checkpoint bitmap */
#define COMMIT_KEY_DELIVERIES 6 /* deliveries hash */
#define COMMIT_KEY_PENDING 7    /* pending list (COMMIT_MODE_REQUEUE) */
#define COMMIT_N_KEYS 7
/* commit.lua: ARGV, then the N result lines, the D dead records, and with the checkpoint the N item tags. */
#define COMMIT_ARG_CHUNK 1     /* the chunk exactly as fetched */
#define COMMIT_ARG_MODE 2      /* COMMIT_MODE_* */
#define COMMIT_ARG_CKPT_NAME 3 /* the chunk's checkpoint name (id:hash) */
#define COMMIT_ARG_USE_CKPT 4  /* COMMIT_CKPT_ON to use the checkpoint */
#define COMMIT_ARG_N 5         /* result lines N */
#define COMMIT_ARG_N_OK 6      /* of which ok */
#define COMMIT_ARG_N_DEAD 7    /* dead records D */
#define COMMIT_N_HEAD_ARGS 7
#define COMMIT_MODE_PARTIAL "p" /* some of the chunk's items: the chunk stays in the processing list */
#define COMMIT_MODE_FINAL "f"   /* the chunk's last items: the chunk leaves the processing list */
#define COMMIT_MODE_DEAD "x"    /* a chunk that cannot run: it goes to the dead list */
#define COMMIT_MODE_REQUEUE "r" /* the chunk's last items, but its earlier partial commits may have been lost with a
                                 * failed-over master: the chunk goes back to pending, checkpoint kept */
#define COMMIT_CKPT_ON "1"
#define COMMIT_CKPT_OFF "0"
/* An item's tag is one of these followed by its index in the chunk. */
#define COMMIT_TAG_OK 'o'
#define COMMIT_TAG_FAILED 'f'
#define COMMIT_TAG_DEAD 'd' /* failed, with the next dead record */
/* commit.lua: replies. */
#define COMMIT_REPLY_FENCED 0      /* the chunk is no longer in the processing list: nothing was written */
#define COMMIT_REPLY_OK 1          /* written */
#define COMMIT_REPLY_CKPT_EXISTS 2 /* a final commit without the checkpoint while one exists: nothing was written */

/* requeue.lua: KEYS, ARGV and replies. */
#define REQUEUE_KEY_PROCESSING 1 /* this worker's processing list */
#define REQUEUE_KEY_PENDING 2    /* pending list */
#define REQUEUE_KEY_STATS 3      /* stats hash */
#define REQUEUE_KEY_DELIVERIES 4 /* deliveries hash */
#define REQUEUE_N_KEYS 4
#define REQUEUE_ARG_CHUNK 1     /* the chunk exactly as fetched */
#define REQUEUE_ARG_CKPT_NAME 2 /* its checkpoint name (id:hash; '' when it has none) */
#define REQUEUE_N_ARGS 2
#define REQUEUE_REPLY_GONE 0 /* the chunk is no longer in the processing list: nothing happened */
#define REQUEUE_REPLY_OK 1   /* moved back to pending */

#endif

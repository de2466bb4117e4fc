/*
 * validate.h - the MLflow server's rules for keys, values and names, checked in the client before
 * anything is dispatched, so that a bad call fails at once and logs nothing.
 * Rules: mlflow/utils/validation.py of the pinned server (see MLFLOW_NOTES.md).
 */
#ifndef MLT_VALIDATE_H
#define MLT_VALIDATE_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>

#define MLT__MAX_KEY_LEN 250         /* metric, param and tag keys, in code points */
#define MLT__MAX_PARAM_VALUE 6000    /* code points */
#define MLT__MAX_TAG_VALUE 8000      /* code points */
#define MLT__MAX_RUN_NAME 250        /* code points */
#define MLT__MAX_EXPERIMENT_NAME 256 /* code points */

/* What a key names, for messages ("metric key", "param key", "tag key"). */
typedef enum mlt__kind { MLT__METRIC, MLT__PARAM, MLT__TAG } mlt__kind;

/*
 * Number of Unicode code points in the UTF-8 string s, or -1 if s is not valid UTF-8
 * (overlong forms, surrogates, code points above U+10FFFF and truncated sequences are invalid).
 */
long mlt__utf8_len(const char *s);

/*
 * Checks a key of the given kind: 1-250 code points of letters (any Unicode letter), digits,
 * '_', '-', '.', ' ', '/', ':'; no '.' or '..' path segment, no leading or trailing '/', no '//'.
 * Returns MLT_OK, or MLT_ERR_INVALID_ARG (NULL), MLT_ERR_INVALID_KEY, MLT_ERR_VALUE_TOO_LONG or
 * MLT_ERR_INVALID_VALUE (not UTF-8) with a message naming the key and the rule (mlt_last_error()),
 * e.g.
 *   metric key 'a//b' is invalid: it must not contain '//'
 */
MLT__MUST_USE mlt_err mlt__validate_key(mlt__kind kind, const char *key);

/* Param value: valid UTF-8, at most 6000 code points (NULL is invalid). Message names the key. */
MLT__MUST_USE mlt_err mlt__validate_param_value(const char *key, const char *value);

/* Tag value: valid UTF-8, at most 8000 code points (NULL is invalid). */
MLT__MUST_USE mlt_err mlt__validate_tag_value(const char *key, const char *value);

/* Run name: NULL allowed (the server names the run); else valid UTF-8, at most 250 code points. */
MLT__MUST_USE mlt_err mlt__validate_run_name(const char *name);

/* Experiment name: non-empty, valid UTF-8, at most 256 code points. */
MLT__MUST_USE mlt_err mlt__validate_experiment_name(const char *name);

/* An artifact's path in a run (what is its name: "artifact path", "artifact_dir"): relative,
 * '/'-separated, at most MLT__MAX_ARTIFACT_PATH bytes and MLT__MAX_ARTIFACT_NAME a part, valid
 * UTF-8; no '.', '..' or empty part, no trailing '/', no '\\', '#' or control character, no
 * leading URI scheme or drive letter ("name:"), no '%' with two hex digits (the server decodes
 * those). NULL or "" is the run's root
 * when empty_ok, else refused. MLT_OK or MLT_ERR_INVALID_ARG with a message naming the rule. */
#define MLT__MAX_ARTIFACT_PATH 1024
#define MLT__MAX_ARTIFACT_NAME 255
MLT__MUST_USE mlt_err mlt__validate_artifact_path(const char *what, const char *path,
                                                  bool empty_ok);

/* Timestamp in ms: >= 0. */
MLT__MUST_USE mlt_err mlt__validate_timestamp(int64_t ts_ms);

#endif

# The mock HTTP API for tests and benchmarks (tests/mockapi/README.md). Included by the top Makefile,
# whose CC, ALL_CFLAGS, LDFLAGS and BUILD it uses; needs libmicrohttpd-dev and libjansson-dev.
# Recursively expanded, so pkg-config runs at recipe time (after `deps` has installed the packages).
MOCKAPI_PKG_FLAGS = $(shell pkg-config --cflags --libs libmicrohttpd jansson 2>/dev/null)

$(BUILD)/mockapi: tests/mockapi/mockapi.c | $(BUILD)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LDFLAGS) $(MOCKAPI_PKG_FLAGS) -lpthread

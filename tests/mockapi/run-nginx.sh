#!/bin/sh
# run-nginx.sh PORT DIR [DELAY_S]
# Starts nginx from nginx.conf.in on 127.0.0.1:PORT, answering every request after DELAY_S seconds
# (default 0.1) with 200 {"ok":true}, with its config, pid file, logs and temp files in DIR (created
# if missing). Returns once nginx listens, printing the pid of its master process; `kill PID` stops it.
# Needs Debian's nginx and libnginx-mod-http-echo.
set -eu
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 PORT DIR [DELAY_S]" >&2
    exit 2
fi
port=$1 delay=${3:-0.1}
module=/usr/lib/nginx/modules/ngx_http_echo_module.so
nginx=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$nginx" ] || [ ! -f "$module" ]; then
    echo "$0: needs nginx and its echo module: apt-get install nginx libnginx-mod-http-echo" >&2
    exit 1
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$2/tmp"
dir=$(cd "$2" && pwd)
sed -e "s|@MODULE@|$module|g" -e "s|@PORT@|$port|g" -e "s|@DIR@|$dir|g" -e "s|@DELAY@|$delay|g" \
    "$here/nginx.conf.in" > "$dir/nginx.conf"
rm -f "$dir/nginx.pid"

# shellcheck disable=SC3045 # dash, Debian's sh, has ulimit -H and -n
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # worker_connections 20000 needs the descriptors
"$nginx" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" </dev/null >>"$dir/stdout.log" 2>&1 &
pid=$!

# nginx writes its pid file once its listening socket is open.
i=0
while [ ! -s "$dir/nginx.pid" ]; do
    if ! kill -0 "$pid" 2>/dev/null || [ $i -ge 100 ]; then
        echo "$0: nginx did not start; $dir/error.log says:" >&2
        tail -n 5 "$dir/error.log" >&2 || true
        kill "$pid" 2>/dev/null || true
        exit 1
    fi
    sleep 0.05
    i=$((i + 1))
done
echo "$pid"

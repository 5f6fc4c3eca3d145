# Shared by the benchmark scripts: `run NAME COMMAND...` runs one benchmark under /usr/bin/time -v with its JSON in
# $OUT/NAME.json, stderr in NAME.err, the command in NAME.cmd and the load average before it in NAME.load.
run() {  # name, command...
  name=$1; shift
  echo "== $name: $* (load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/log.txt"
  echo "$*" > "$OUT/$name.cmd"
  cut -d' ' -f1-3 /proc/loadavg > "$OUT/$name.load"
  /usr/bin/time -v "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  echo "   exit $? (load after $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/log.txt"
}

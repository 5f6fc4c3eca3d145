#!/bin/bash
# Both schedules at once, one core each (threads = 1 in the TOML), CPU time by /usr/bin/time.
cd /work/exp5
for s in mmh uniform; do
  nohup /usr/bin/time -v ./oboro-af49ff8 train --config run_$s.toml > train_$s.log 2> time_$s.txt &
done
sleep 1
for p in $(pgrep -f "oboro-af49ff8 train"); do renice -n -15 -p $p; done

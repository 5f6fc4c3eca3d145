./build/oboro bench pipeline --config oboro-1b --size 736x416 --steps 30 --run-steps 2 --cfg 5 --t5-layers 24 --te-type bf16 --type q8_0 --vae-type bf16 --convert --json

"""`python -m hms_keras.data.synthetic --out DIR --n-eegs N --seed S`: see `writer.main`."""

from hms_keras.data.synthetic.writer import main

if __name__ == "__main__":
    main()

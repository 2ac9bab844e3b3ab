{
  "targets": [
    {
      "target_name": "vswitch_native",
      "sources": ["src/io/native/vswitch.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"]
    }
  ]
}

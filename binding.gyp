{
  # The CPU addon. (GCC 12's AVX-512 intrinsic headers trip -Wmaybe-uninitialized on
  # _mm512_undefined_*; the avx512 target silences that false positive.)
  # Kernels are compiled once per ISA (scalar, AVX2+FMA+F16C, AVX-512, AVX-512+VNNI) into one
  # addon; native/common/cpu_features.cpp picks the best one the CPU supports at load time.
  "target_defaults": {
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions"],
    "cflags": ["-O3", "-fPIC", "-fno-math-errno", "-Wall", "-Wno-unused-function"],
    "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fPIC", "-fno-math-errno"],
    "include_dirs": ["native"],
    "xcode_settings": {
      "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
      "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
      "OTHER_CPLUSPLUSFLAGS": ["-O3"]
    }
  },
  "targets": [
    {
      "target_name": "tessera",
      "sources": [
        "native/addon/addon.cpp",
        "native/addon/args.cpp",
        "native/addon/bind_linear.cpp",
        "native/addon/bind_attention.cpp",
        "native/addon/bind_ops.cpp",
        "native/addon/bind_mmap.cpp",
        "native/addon/bind_convert.cpp",
        "native/common/cpu_features.cpp",
        "native/common/thread_pool.cpp",
        "native/cpu/dispatch.cpp",
        "native/cpu/isa_scalar.cpp",
        "native/cpu/embedding.cpp",
        "native/cpu/rope.cpp",
        "native/cpu/alibi.cpp",
        "native/cpu/moe.cpp",
        "native/cpu/topk.cpp",
        "native/cpu/cross_entropy.cpp",
        "native/cpu/paged_kv_write.cpp",
        "native/cpu/attention_naive.cpp",
        "native/cpu/weight_convert.cpp"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "conditions": [
        ["target_arch=='x64' or target_arch=='ia32'", {
          "dependencies": ["tessera_isa_avx2", "tessera_isa_avx512", "tessera_isa_avx512vnni"],
          "defines": ["TESSERA_HAVE_X86_ISAS=1"]
        }],
        ["OS=='linux'", { "libraries": ["-pthread"] }]
      ]
    }
  ],
  "conditions": [
    ["target_arch=='x64' or target_arch=='ia32'", {
      "targets": [
        {
          "target_name": "tessera_isa_avx2",
          "type": "static_library",
          "sources": ["native/cpu/isa_avx2.cpp"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c"],
          "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-O3", "-mavx2", "-mfma", "-mf16c"] }
        },
        {
          "target_name": "tessera_isa_avx512",
          "type": "static_library",
          "sources": ["native/cpu/isa_avx512.cpp"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-Wno-uninitialized", "-Wno-maybe-uninitialized"],
          "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-O3", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"] }
        },
        {
          "target_name": "tessera_isa_avx512vnni",
          "type": "static_library",
          "sources": ["native/cpu/isa_avx512vnni.cpp"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-Wno-uninitialized", "-Wno-maybe-uninitialized"],
          "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-O3", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni"] }
        }
      ]
    }]
  ]
}

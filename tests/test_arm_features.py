"""`segtool doctor` on Arm: CPU features from the kernel's HWCAP bits or /proc/cpuinfo, and whether the
installed onnxruntime needs a feature the CPU lacks (scripts/arm64_check.sh runs doctor under qemu)."""

from __future__ import annotations

import platform

from segtool.runtime.tools import diagnostics as D

# /proc/cpuinfo of a Raspberry Pi 4 (Cortex-A72, Armv8.0) and of an AWS Graviton3 (Neoverse-V1).
PI4 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd08
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop \
sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""
# AT_HWCAP / AT_HWCAP2 as qemu-user 7.2 reports them for -cpu cortex-a72 and for its default -cpu max.
QEMU_A72 = (0x8FB, 0x0)
QEMU_MAX = (0xECFFFFFB, 0x7F877FFF)


def test_cpuinfo_of_a_raspberry_pi_4_has_no_dot_product_or_fp16():
    assert D.arm_features_from_cpuinfo(PI4) == ["fp", "asimd"]


def test_cpuinfo_of_a_graviton3_has_dot_product_fp16_bf16_i8mm_and_sve():
    found = D.arm_features_from_cpuinfo(GRAVITON3)
    assert found == ["fp", "asimd", "atomics", "fphp", "asimdhp", "asimddp", "sve", "i8mm", "bf16"]
    assert "svei8mm" not in found and "sve2" not in found  # whole words, not prefixes


def test_hwcap_bits_of_qemu_cortex_a72_and_max():
    assert D.arm_features_from_hwcap(*QEMU_A72) == ["fp", "asimd"]
    assert D.arm_features_from_hwcap(*QEMU_MAX) == [
        "fp",
        "asimd",
        "atomics",
        "fphp",
        "asimdhp",
        "asimddp",
        "sve",
        "sve2",
        "i8mm",
        "bf16",
        "sme",
    ]
    assert "sme2" in D.arm_features_from_hwcap(0, 1 << 37)  # AT_HWCAP2 is 64 bits wide


def test_hwcap_and_cpuinfo_name_the_same_features():
    """A Graviton3's Features line and its HWCAP bits (Linux's hwcap.h) read the same."""
    hwcap = sum(1 << bit for bit in (0, 1, 8, 9, 10, 20, 22))
    hwcap2 = sum(1 << bit for bit in (13, 14))
    assert D.arm_features_from_hwcap(hwcap, hwcap2) == D.arm_features_from_cpuinfo(GRAVITON3)


def test_onnxruntime_1_21_0_needs_fp16_a_raspberry_pi_4_lacks():
    pi4 = D.arm_features_from_cpuinfo(PI4)
    assert D.ort_arm_missing("1.21.0", pi4) == ["asimdhp"]
    assert D.ort_arm_missing("1.21.0", D.arm_features_from_cpuinfo(GRAVITON3)) == []
    for version in ("1.20.1", "1.21.1", "1.22.0", "1.32.0"):
        assert D.ort_arm_missing(version, pi4) == []
    assert D.ort_arm_missing("1.32.0", []) == ["fp", "asimd"]


def test_doctor_rows_say_what_this_arm_cpu_lacks(monkeypatch):
    monkeypatch.setattr(D, "arm_features", lambda: (D.arm_features_from_cpuinfo(PI4), "/proc/cpuinfo"))
    rows, problems = D.arm_rows("1.21.0")
    table = dict(rows)
    assert table["CPU features"].startswith("fp, asimd (from /proc/cpuinfo); absent: atomics, fphp, asimdhp, asimddp")
    assert "no dot product" in table["int8 on CPU"]
    assert "this CPU lacks asimdhp" in table["ORT needs"]
    assert len(problems) == 1 and "onnxruntime 1.21.0 needs asimdhp" in problems[0]
    rows, problems = D.arm_rows("1.32.0")
    assert dict(rows)["ORT needs"] == "fp, asimd: all present" and problems == []


def test_diagnose_reports_arm_rows_on_aarch64(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(D, "arm_features", lambda: (D.arm_features_from_cpuinfo(GRAVITON3), "AT_HWCAP"))
    rows, _ = D.diagnose()
    table = dict(rows)
    assert "asimddp" in table["CPU features"] and "(from AT_HWCAP)" in table["CPU features"]
    assert "dot product (asimddp)" in table["int8 on CPU"] and "ORT needs" in table

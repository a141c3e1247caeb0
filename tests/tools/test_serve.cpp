// test_serve.cpp: the real mo_serve binary on a free port with a small random checkpoint: the page, the
// JSON top-5 of POST /predict (raw bytes and multipart) equal to mo_predict's and to the in-process
// inference path, for a checkpoint trained at 32 px too (its preprocessing, or the options'), batches
// equal to single images, PNG and WebP uploads, GET /health, bad uploads answered with 4xx JSON while it
// keeps serving, a causal ViT served causal, and mistakes on its command line. The HTTP hardening is
// tested in test_serve_http.cpp.
#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "autograd/graph.h"
#include "tests/tools/serve_test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/common/inference.h"
#include "tools/engine/trainer.h"

using namespace mo;
using namespace mo::test::serve;

namespace {

TEST_F(ServeTest, PageIsServed) {
  Reply r = get(port_, "/");
  ASSERT_EQ(r.status, 200) << r.head;
  EXPECT_NE(r.head.find("text/html"), std::string::npos);
  EXPECT_NE(r.body.find("fetch('/predict'"), std::string::npos);
  EXPECT_NE(r.body.find("</html>"), std::string::npos);
}

TEST_F(ServeTest, PredictMatchesMoPredictAndInference) {
  const std::string file = image("chelsea.jpg");
  Reply r = post(port_, "/predict", read_bytes(file));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.head.find("application/json"), std::string::npos);
  std::vector<Top> got = parse_top5(r.body);
  ASSERT_EQ(got.size(), 5u) << r.body;

  // the file stores no preprocessing: the defaults, as mo_predict's, said at start-up and in the answer
  EXPECT_NE(server_.said.find("preprocessing 224 px (default), crop_pct 1 (default), bicubic (default)"),
            std::string::npos) << server_.said;
  EXPECT_NE(r.body.find("\"preprocess\": {\"img_size\": 224, \"crop_pct\": 1, \"interpolation\": \"bicubic\", "
                        "\"mean\": [0.485, 0.456, 0.406], \"std\": [0.229, 0.224, 0.225]}"),
            std::string::npos) << r.body;

  // in-process: the same weights and the eval transform
  tools::LoadedModel m = tools::load_model_for_eval(weights_, "test_mambaout", Device::cpu(), DType::f32);
  data::EvalTransformConfig tf = tools::eval_preprocess_for(m).transform;
  EXPECT_EQ(tf.size, 224);
  NoGradGuard ng;
  std::vector<double> p = tools::softmax(m.model->forward_nhwc(tools::load_images({file}, tf, Device::cpu(), DType::f32))
                                             .to_vector<float>());
  for (const Top& t : got) EXPECT_NEAR(t.prob, p[static_cast<size_t>(t.index)], 1e-6 * p[static_cast<size_t>(t.index)] + 1e-9);
  for (size_t i = 0; i + 1 < got.size(); ++i) EXPECT_GE(got[i].prob, got[i + 1].prob);
  EXPECT_EQ(*std::max_element(p.begin(), p.end()), p[static_cast<size_t>(got[0].index)]);

  expect_mo_predicts(weights_, "--model test_mambaout", file, r.body);
}

TEST_F(ServeTest, MultipartUploadGivesTheSameAnswer) {
  const std::string bytes = read_bytes(image("coffee.jpg"));
  Reply raw = post(port_, "/predict", bytes);
  ASSERT_EQ(raw.status, 200) << raw.body;
  const std::string b = "----moBoundary42";
  std::string body = "--" + b + "\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--" + b +
                     "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"coffee.jpg\"\r\n"
                     "Content-Type: image/jpeg\r\n\r\n" + bytes + "\r\n--" + b + "--\r\n";
  Reply mp = post(port_, "/predict", body, "multipart/form-data; boundary=" + b);
  ASSERT_EQ(mp.status, 200) << mp.body;
  std::vector<Top> a = parse_top5(raw.body), c = parse_top5(mp.body);
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(c.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(a[i].index, c[i].index);
    EXPECT_EQ(a[i].prob, c[i].prob);
  }
  // multipart without the "image" field; a part named by filename="image" only is not that field
  for (std::string part : {"name=\"other\"", "name=\"f\"; filename=\"image\""}) {
    std::string none = "--" + b + "\r\nContent-Disposition: form-data; " + part + "\r\n\r\nx\r\n--" + b + "--\r\n";
    Reply bad = post(port_, "/predict", none, "multipart/form-data; boundary=" + b);
    EXPECT_EQ(bad.status, 400) << part;
    EXPECT_NE(bad.body.find("no field 'image'"), std::string::npos) << bad.body;
  }
  // a truncated multipart body (no closing boundary)
  Reply cut = post(port_, "/predict", body.substr(0, body.size() / 2), "multipart/form-data; boundary=" + b);
  EXPECT_EQ(cut.status, 400) << cut.body;
  EXPECT_NE(cut.body.find("\"error\""), std::string::npos);
}

// PNG and WebP uploads are decoded (by their bytes, whatever the name): lossless copies of a JPEG
// written by PIL (whose JPEG decode is ours bit for bit) get the JPEG's answer exactly; the page's file
// picker offers them; broken ones are 400s that name the format.
TEST_F(ServeTest, PngAndWebpUploadsGetTheJpegsAnswer) {
  const std::string py = MO_PYTHON;
  const std::string jpg = image("coffee.jpg"), png = mo::test::tmp_path("serve_coffee.png"),
                    webp = mo::test::tmp_path("serve_coffee.webp");
  if (py.empty() || mo::test::run_command(py + " -c \"from PIL import Image; im = Image.open('" + jpg +
                                          "').convert('RGB'); im.save('" + png + "'); im.save('" + webp +
                                          "', lossless=True)\"").rc != 0)
    GTEST_SKIP() << "Debian's python3 with PIL is not available";
  Reply want = post(port_, "/predict", read_bytes(jpg));
  ASSERT_EQ(want.status, 200) << want.body;
  const std::vector<Top> w = parse_top5(want.body);
  ASSERT_EQ(w.size(), 5u);
  for (const std::string& f : {png, webp}) {
    Reply r = post(port_, "/predict", read_bytes(f));
    ASSERT_EQ(r.status, 200) << f << ": " << r.body;
    std::vector<Top> got = parse_top5(r.body);
    ASSERT_EQ(got.size(), 5u) << r.body;
    for (size_t i = 0; i < 5; ++i) {
      EXPECT_EQ(got[i].index, w[i].index) << f;
      EXPECT_EQ(got[i].prob, w[i].prob) << f;
    }
    expect_mo_predicts(weights_, "--model test_mambaout", f, r.body);
    const std::string bytes = read_bytes(f);
    Reply cut = post(port_, "/predict", bytes.substr(0, bytes.size() / 2));
    EXPECT_EQ(cut.status, 400) << cut.body;
    EXPECT_NE(cut.body.find(f == png ? "PNG: " : "WebP: "), std::string::npos) << cut.body;
  }
  Reply page = get(port_, "/");
  EXPECT_NE(page.body.find("accept=\".jpg,.jpeg,.png,.webp,"), std::string::npos);
}

TEST_F(ServeTest, BadRequestsGet4xxJsonAndServerKeepsServing) {
  const std::string good = read_bytes(image("rocket.jpg"));
  Reply text = post(port_, "/predict", "this is not an image at all", "text/plain");
  EXPECT_EQ(text.status, 400) << text.body;
  EXPECT_NE(text.body.find("\"error\": "), std::string::npos) << text.body;

  Reply trunc = post(port_, "/predict", good.substr(0, good.size() / 2));
  EXPECT_EQ(trunc.status, 400) << trunc.body;
  EXPECT_NE(trunc.body.find("\"error\": "), std::string::npos) << trunc.body;

  Reply empty = post(port_, "/predict", "");
  EXPECT_EQ(empty.status, 400) << empty.body;

  Reply big = post(port_, "/predict", std::string(3u << 20, 'x'));  // the test server's limit is 2 MB
  EXPECT_EQ(big.status, 413) << big.head;
  EXPECT_NE(big.body.find("over the limit"), std::string::npos) << big.body;
  // announced but never sent: refused from the head, without waiting for the body
  for (const char* n : {"999999999999", "99999999999999999999999999999999"}) {
    Reply huge = http(port_, "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + std::string(n) + "\r\n\r\n");
    EXPECT_EQ(huge.status, 413) << n << "\n" << huge.head;
  }

  Reply missing = get(port_, "/nothing");
  EXPECT_EQ(missing.status, 404);
  EXPECT_NE(missing.body.find("\"error\""), std::string::npos);
  Reply get_predict = get(port_, "/predict");
  EXPECT_EQ(get_predict.status, 405);
  Reply put = http(port_, "PUT /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(put.status, 405);
  for (const char* junk : {"hello\r\n\r\n", "GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", "BREW / HTTP/1.1\r\n\r\n"}) {
    Reply garbage = http(port_, junk, /*to_close=*/true);
    EXPECT_EQ(garbage.status, 400) << junk;
    EXPECT_NE(garbage.body.find("\"error\""), std::string::npos) << junk;
  }

  Reply ok = post(port_, "/predict", good);
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(parse_top5(ok.body).size(), 5u);
}

TEST_F(ServeTest, ConcurrentRequestsAllAnswered) {
  const std::string good = read_bytes(image("astronaut.jpg"));
  Reply ref = post(port_, "/predict", good);
  ASSERT_EQ(ref.status, 200);
  std::vector<Top> want = parse_top5(ref.body);
  std::vector<Reply> replies(6);
  std::vector<std::thread> ts;
  for (size_t i = 0; i < replies.size(); ++i)
    ts.emplace_back([&, i] { replies[i] = i % 3 == 2 ? post(port_, "/predict", "junk") : post(port_, "/predict", good); });
  for (auto& t : ts) t.join();
  for (size_t i = 0; i < replies.size(); ++i) {
    if (i % 3 == 2) {
      EXPECT_EQ(replies[i].status, 400);
      continue;
    }
    ASSERT_EQ(replies[i].status, 200) << replies[i].body;
    std::vector<Top> got = parse_top5(replies[i].body);
    ASSERT_EQ(got.size(), 5u);
    for (size_t k = 0; k < 5; ++k) EXPECT_EQ(got[k].index, want[k].index);
  }
}

// 64 clients sending one byte every 200 ms and 64 that send nothing hold connections while a normal

// request is answered within 1 s; all 128 are still open (not answered, not closed) when it is.

// A request that does not arrive whole within the deadline gets 408, wherever it stalls and even when

// its client keeps sending: in the request line, in the headers (a byte every 100 ms), in the body.

// Two Content-Length headers (equal or not), a list, a sign, junk, chunked uploads and a POST without a

// length are refused before the body is read, and the rest of the bytes is not taken as a next request.

// Compressed uploads are refused (httplib would inflate a small gzip or brotli bomb into memory

// unbounded), as are heads over 64 KiB, in many lines or one.

// Beyond --max-connections a connection is answered 503 at once; when one closes, requests get through.

TEST_F(ServeTest, HealthSaysModelDeviceUptimeAndRequests) {
  auto count = [](const std::string& j, const std::string& key) {
    std::smatch m;
    return std::regex_search(j, m, std::regex("\"" + key + "\": ([0-9.]+)")) ? std::stod(m[1]) : -1.0;
  };
  Reply a = get(port_, "/health");
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_NE(a.head.find("application/json"), std::string::npos);
  for (const char* want : {"\"model\": \"test_mambaout\"", "\"classes\": 1000", "\"device\": \"cpu\"",
                           "\"precision\": \"fp32\"", "\"max_batch\": 1", "\"img_size\": 224"})
    EXPECT_NE(a.body.find(want), std::string::npos) << want << " in " << a.body;
  ASSERT_EQ(post(port_, "/predict", read_bytes(image("coffee.jpg"))).status, 200);
  ASSERT_EQ(post(port_, "/predict", "junk").status, 400);  // not a prediction served
  Reply b = get(port_, "/health");
  EXPECT_EQ(count(b.body, "requests"), count(a.body, "requests") + 1) << a.body << "\n" << b.body;
  EXPECT_GT(count(b.body, "uptime_s"), count(a.body, "uptime_s"));
  EXPECT_EQ(http(port_, "POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n").status, 405);
}

// A checkpoint trained at 32 px: mo_serve resizes as mo_predict does (the stored config) and gets its

// exact top-5, for an image of the folder and for a large photo; with --img-size / --crop-pct /

// --interpolation it agrees with mo_predict given the same options.

// One epoch of the small test config on a 6-class folder (model "" keeps the config's); the checkpoint path.
std::string train_one_epoch(const std::string& root, const std::string& run, const std::string& model,
                            const std::string& attention) {
  tools::TrainConfig c = tools::testing::small_config(root, mo::test::tmp_path(run));
  if (!model.empty()) c.model.name = model;
  c.model.num_classes = 6;
  c.model.attention = attention;
  c.sched.epochs = 1;
  c.sched.warmup_epochs = 0;
  c.sched.cooldown_epochs = 0;
  c.train.eval_every = 0;
  std::FILE* devnull = std::fopen("/dev/null", "w");
  std::string ckpt;
  {
    tools::Trainer t(c, nullptr, devnull);
    ckpt = t.fit().last_checkpoint;
  }
  std::fclose(devnull);
  return ckpt;
}

TEST(Serve, CheckpointTrainedAt32PxGivesMoPredictsTop5) {
  const std::string root = tools::testing::make_image_folder("serve_data32", 6, 4, 1);
  const std::string ckpt = train_one_epoch(root, "serve_run32", "", "full");
  ASSERT_FALSE(ckpt.empty());
  const std::vector<std::string> files = {root + "/val/class_4/0.jpg", image("chelsea.jpg")};

  ServeProcess srv;
  ASSERT_TRUE(srv.start(ckpt, {})) << srv.said;
  EXPECT_NE(srv.said.find("preprocessing 32 px (checkpoint), crop_pct 1 (checkpoint), bicubic (checkpoint)"),
            std::string::npos) << srv.said;
  for (const std::string& f : files) {
    Reply r = post(srv.port, "/predict", read_bytes(f));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_NE(r.body.find("\"img_size\": 32, \"crop_pct\": 1, \"interpolation\": \"bicubic\""), std::string::npos)
        << r.body;
    expect_mo_predicts(ckpt, "", f, r.body);
  }
  EXPECT_TRUE(srv.stop());

  ServeProcess opt;
  const std::vector<std::string> o = {"--img-size", "48", "--crop-pct", "0.875", "--interpolation", "bilinear"};
  ASSERT_TRUE(opt.start(ckpt, o)) << opt.said;
  EXPECT_NE(opt.said.find("preprocessing 48 px (option), crop_pct 0.875 (option), bilinear (option)"),
            std::string::npos) << opt.said;
  for (const std::string& f : files) {
    Reply r = post(opt.port, "/predict", read_bytes(f));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_NE(r.body.find("\"img_size\": 48, \"crop_pct\": 0.875, \"interpolation\": \"bilinear\""),
              std::string::npos) << r.body;
    expect_mo_predicts(ckpt, "--img-size 48 --crop-pct 0.875 --interpolation bilinear", f, r.body);
  }
  EXPECT_TRUE(opt.stop());
  fs::remove_all(root);
}

// A causal ViT checkpoint (vit_tiny_patch4_32, model.attention causal): mo_serve says it serves it causal
// and answers with mo_predict's top-5 (which tests/tools/test_vit_tools.cpp checks against the causal forward).
TEST(Serve, CausalVitCheckpointIsServedCausal) {
  const std::string root = tools::testing::make_image_folder("serve_vit_data", 6, 2, 1);
  const std::string ckpt = train_one_epoch(root, "serve_vit_run", "vit_tiny_patch4_32", "causal");
  ASSERT_FALSE(ckpt.empty());
  ServeProcess srv;
  ASSERT_TRUE(srv.start(ckpt, {})) << srv.said;
  EXPECT_NE(srv.said.find("vit_tiny_patch4_32 (6 classes, causal attention)"), std::string::npos) << srv.said;
  for (const std::string& f : {root + "/val/class_2/0.jpg", image("chelsea.jpg")}) {
    Reply r = post(srv.port, "/predict", read_bytes(f));
    ASSERT_EQ(r.status, 200) << r.body;
    expect_mo_predicts(ckpt, "", f, r.body);
  }
  EXPECT_TRUE(srv.stop());
  fs::remove_all(root);
}

// --max-batch 4 with a 200 ms window on the CPU: concurrent requests run as batches (fewer batches than

// requests in /health) and each answer equals the unbatched one.

TEST(Serve, BatchedRequestsEqualSingleOnes) {
  const std::string weights = mo::test::tmp_path("serve_batch.safetensors");
  make_weights(weights);
  const std::vector<std::string> names = {"chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg"};
  ServeProcess one, many;
  ASSERT_TRUE(one.start(weights, {"--model", "test_mambaout"})) << one.said;
  ASSERT_TRUE(many.start(weights, {"--model", "test_mambaout", "--max-batch", "4", "--batch-window-ms", "200"}))
      << many.said;
  std::vector<std::string> want;
  for (const std::string& n : names) want.push_back(post(one.port, "/predict", read_bytes(image(n))).body);
  std::vector<Reply> got(8);
  std::vector<std::thread> ts;
  for (size_t i = 0; i < got.size(); ++i)
    ts.emplace_back([&, i] { got[i] = post(many.port, "/predict", read_bytes(image(names[i % 4]))); });
  for (auto& t : ts) t.join();
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].status, 200) << got[i].body;
    std::vector<Top> a = parse_top5(want[i % 4]), b = parse_top5(got[i].body);
    ASSERT_EQ(a.size(), 5u);
    ASSERT_EQ(b.size(), 5u);
    for (size_t k = 0; k < 5; ++k) {
      EXPECT_EQ(a[k].index, b[k].index) << names[i % 4] << " rank " << k;
      EXPECT_NEAR(a[k].prob, b[k].prob, 1e-5 * a[k].prob) << names[i % 4] << " rank " << k;
    }
  }
  Reply h = get(many.port, "/health");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(h.body, m, std::regex("\"requests\": (\\d+), .*\"batches\": (\\d+)"))) << h.body;
  EXPECT_EQ(std::stoi(m[1]), 8);
  EXPECT_LT(std::stoi(m[2]), 8) << "no two requests were batched: " << h.body;
  EXPECT_TRUE(one.stop());
  EXPECT_TRUE(many.stop());
  fs::remove(weights);
}

// Mistakes on the command line end mo_serve at once with the option named; a port in use is an error

// (not a second server sharing it).

TEST_F(ServeTest, BadOptionsAndABusyPortAreErrors) {
  // `timeout`: a mo_serve that does start (say, sharing the busy port) fails the test instead of hanging it
  const std::string bin = "timeout 60 " + std::string(MO_BINARY_DIR) + "/tools/mo_serve --weights " + weights_ +
                          " --model test_mambaout --device cpu ";
  struct Case {
    std::string args, says;
    int rc;  // 2: a mistake on the command line, 1: an error while starting
  };
  for (const Case& c : std::vector<Case>{
           {"--port " + std::to_string(port_), "cannot listen on 127.0.0.1:" + std::to_string(port_) + ": Address already in use", 1},
           {"--precision bf16", "--precision bf16 needs a GPU", 1},
           {"--amp", "--precision bf16 needs a GPU", 1},
           {"--precision fp16", "--precision: expected fp32 or bf16, got 'fp16'", 2},
           {"--amp --precision fp32", "--precision excludes --amp", 2},
           {"--interpolation nearest", "--interpolation: expected bicubic or bilinear, got 'nearest'", 2},
           {"--img-size 8", "--img-size: expected an integer from 32 to 8192, got '8'", 2},
           {"--max-batch 0", "--max-batch: expected an integer from 1 to 1024, got '0'", 2},
           {"--max-connections x", "--max-connections: expected an integer", 2},
           {"--request-timeout 0", "--request-timeout: expected a number from 0.1", 2},
           {"--device gpu", "--device: expected auto, cpu or cuda, got 'gpu'", 2},
           {"--host no.such.host.invalid", "cannot listen on no.such.host.invalid:0", 1},
       }) {
    auto [rc, out] = mo::test::run_command(bin + (c.args.rfind("--port", 0) == 0 ? "" : "--port 0 ") + c.args);
    EXPECT_EQ(rc, c.rc) << c.args << "\n" << out;
    EXPECT_NE(out.find(c.says), std::string::npos) << c.args << "\n" << out;
    EXPECT_NE(out.find("mo_serve: error: "), std::string::npos) << c.args << "\n" << out;
  }
  auto [rc, out] = mo::test::run_command(bin + "--workers 4");
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("mo_serve: error: unknown option '--workers'"), std::string::npos) << out;
  EXPECT_EQ(get(port_, "/").status, 200);
}

}  // namespace

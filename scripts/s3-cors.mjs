// Sets the bucket CORS rule browser uploads need (PUT from any origin, the
// ETag header exposed), with the S3_* variables of scripts/garage.sh, and
// reads it back: exits non-zero unless the store holds the rule.
import { GetBucketCorsCommand, PutBucketCorsCommand } from "@aws-sdk/client-s3";
import { bucket, s3 } from "./s3.mjs";

await s3.send(new PutBucketCorsCommand({
  Bucket: bucket,
  CORSConfiguration: {
    CORSRules: [{
      AllowedOrigins: ["*"],
      AllowedMethods: ["GET", "PUT", "POST", "DELETE", "HEAD"],
      AllowedHeaders: ["*"],
      ExposeHeaders: ["ETag"],
      MaxAgeSeconds: 600,
    }],
  },
}));
const { CORSRules = [] } = await s3.send(new GetBucketCorsCommand({ Bucket: bucket }));
const exposed = CORSRules.flatMap((rule) => rule.ExposeHeaders ?? []).map((h) => h.toLowerCase());
if (!exposed.includes("etag")) {
  throw new Error(`the bucket's CORS rule does not expose ETag: ${JSON.stringify(CORSRules)}`);
}

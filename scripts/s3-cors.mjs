// Sets the bucket CORS rule browser uploads need (PUT from any origin, the
// ETag header exposed), with the S3_* variables of scripts/garage.sh.
import { PutBucketCorsCommand } from "@aws-sdk/client-s3";
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
